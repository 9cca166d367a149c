"""Errors that the CLI turns into one-line messages and exit codes.

Exit codes are a contract with CI users: 0 success, 1 gate failed, 2 usage or input error,
3 runtime failure.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3


class EvalkitError(Exception):
    """Base class: a failure with a message fit for a terminal, no traceback needed."""

    exit_code = EXIT_RUNTIME


class UsageError(EvalkitError):
    """Bad command-line arguments or options."""

    exit_code = EXIT_USAGE


class InputError(EvalkitError):
    """Bad input data. Names the file, line (1-based) and field when known."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = ":".join(str(p) for p in (path, line) if p is not None)
        prefix = f"{where}: " if where else ""
        suffix = f" (field '{field}')" if field is not None else ""
        super().__init__(f"{prefix}{message}{suffix}")


class ResourceMissingError(EvalkitError):
    """A model or data resource is not available offline; the message says what to install or set."""

    exit_code = EXIT_USAGE


class RuntimeFailure(EvalkitError):
    """The run started but could not finish (a crash), or finished with too many errors."""

    exit_code = EXIT_RUNTIME


class WorkerLost(RuntimeFailure):
    """A process doing the run's work ended (a metric's process): no record's fault, so the run stops."""


class AllRecordsFailed(RuntimeFailure):
    """The run finished and wrote its results, but no record could be generated: not a crash."""
