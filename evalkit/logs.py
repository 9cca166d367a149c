"""Logging for the command line: ``-v`` (INFO) and ``-vv`` (DEBUG) on stderr, credentials never in a line.

Libraries that log request headers or bodies at DEBUG (botocore prints the session token there) are kept at
WARNING whatever the verbosity, and every record goes through :class:`RedactingFilter`, which replaces known
secrets (the AWS secret key and session token of the environment, and those of every boto3 session evalkit
builds: :func:`register_secret`) with ``***``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_NOISY = ("botocore", "boto3", "urllib3", "s3transfer", "filelock")
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line."""
    if value and len(value) >= 8:
        with _LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (it may be replaced after set-up)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def configure_logging(verbosity: int = 0) -> None:
    """WARNING by default, INFO with ``-v``, DEBUG with ``-vv``; noisy libraries stay at WARNING. Other
    handlers on the root logger (a notebook's, a test runner's) are left in place."""
    for name in SECRET_ENV:
        register_secret(os.environ.get(name))
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("evalkit %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler._evalkit = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_evalkit", False)] + [handler]
    for existing in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in existing.filters):
            existing.addFilter(RedactingFilter())
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
