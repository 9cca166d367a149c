"""What the Bedrock and SageMaker runners share: boto3 clients, error classification, JSON templates.

Clients come from the standard boto3 chain (region and profile from the environment, the config files, SSO
or an instance role; ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` / ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` and the
other standard overrides keep working: no endpoint is hard-coded). botocore's own retries are switched
off explicitly (``total_max_attempts: 1``; its default mode changed between versions): the executor is
the one retry policy, so ``Result.attempts`` counts every request sent. Timeouts are the per-request
timeout; the connection pool fits the concurrency.

Nothing here logs or records credentials: error messages come from the service's response, and botocore's
DEBUG logging (which prints the session token) is kept at WARNING whatever the caller's log level.
"""

from __future__ import annotations

import json
import logging
import os
import string
from typing import Any

from evalkit.errors import ResourceMissingError, UsageError
from evalkit.runners.base import FATAL, RETRYABLE, TIMEOUT, RunnerOptions

# Error codes the services use for a call worth repeating, and for one that took too long.
RETRYABLE_CODES = {
    "ThrottlingException", "Throttling", "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "ServiceUnavailableException", "ServiceUnavailable", "InternalServerException", "InternalFailure",
    "InternalServerError", "ModelNotReadyException", "ServiceQuotaExceededException",
}
TIMEOUT_CODES = {"ModelTimeoutException", "RequestTimeout", "RequestTimeoutException"}
RETRYABLE_STATUS = {429, 500, 502, 503, 504}
INSTALL_HINT = "pip install 'evalkit[aws]'"


def quiet_botocore() -> None:
    """botocore's DEBUG logs print request headers, the session token among them: never let them through."""
    for name in ("botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))


def require_boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise ResourceMissingError(f"AWS runners need boto3: {INSTALL_HINT}") from None
    return boto3


def aws_session() -> Any:
    """A boto3 session from the standard chain; its secret key and session token are registered with the log
    redaction (:mod:`evalkit.logs`) before anything can log them."""
    from evalkit.logs import register_secret

    session = require_boto3().session.Session()
    credentials = session.get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        register_secret(frozen.secret_key)
        register_secret(frozen.token)
    return session


def region_from_arn(target: str) -> str | None:
    """The region of ``arn:aws:bedrock:REGION:...`` (None for a plain model id)."""
    parts = target.split(":")
    return parts[3] if target.startswith("arn:") and len(parts) > 4 and parts[3] else None


def resolve_region(target: str) -> str:
    """The region a call goes to: the ARN's own, else the standard chain's (AWS_DEFAULT_REGION, the profile),
    else AWS_REGION (which other AWS SDKs read and boto3 does not)."""
    region = region_from_arn(target) or aws_session().region_name or os.environ.get("AWS_REGION")
    if not region:
        raise UsageError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or a region in your AWS profile")
    return region


def make_client(service: str, region: str, options: RunnerOptions) -> Any:
    """A boto3 client for ``service`` with botocore retries off, the per-request timeout and a pool that fits
    the concurrency."""
    quiet_botocore()
    from botocore.config import Config

    workers = options.concurrency or 4
    config = Config(retries={"mode": "standard", "total_max_attempts": 1},
                    connect_timeout=min(10.0, options.timeout_s), read_timeout=options.timeout_s,
                    max_pool_connections=max(10, workers), user_agent_extra="evalkit")
    return aws_session().client(service, region_name=region, config=config)


def classify_aws(error: BaseException) -> tuple[str, str]:
    """``(error kind, message)`` for an exception from a botocore call."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code") or "")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"{code or 'ClientError'} (HTTP {status}): {info.get('Message') or ''}".rstrip(": ")
        if code in TIMEOUT_CODES or status == 408:
            return TIMEOUT, message
        if code in RETRYABLE_CODES or (status in RETRYABLE_STATUS and code not in {"ModelErrorException"}):
            return RETRYABLE, message
        return FATAL, message
    if isinstance(error, (ReadTimeoutError, ConnectTimeoutError, TimeoutError)):
        return TIMEOUT, f"{type(error).__name__}: the call took longer than the request timeout"
    if isinstance(error, (EndpointConnectionError, ConnectionClosedError, ConnectionError)):
        return RETRYABLE, f"{type(error).__name__}: {error}"
    if isinstance(error, NoCredentialsError):
        return FATAL, "no AWS credentials found by the standard chain (environment, profile, SSO, instance role)"
    try:  # urllib3 protocol errors surface when a connection drops mid-response
        from urllib3.exceptions import HTTPError as Urllib3Error

        if isinstance(error, Urllib3Error):
            return RETRYABLE, f"{type(error).__name__}: {error}"
    except ImportError:  # pragma: no cover
        pass
    return FATAL, f"{type(error).__name__}: {error}"


def render_content(template: str, prompt: str) -> bytes:
    """A JSON request body from a template with ``$prompt`` (fmeval's convention: the prompt is inserted as a
    JSON string, quotes and escapes included). The result must be valid JSON."""
    try:
        body = string.Template(template).substitute(prompt=json.dumps(prompt, ensure_ascii=False))
    except (KeyError, ValueError) as error:
        raise UsageError(f"content_template: {error} (use $prompt where the prompt goes)") from None
    try:
        json.loads(body)
    except ValueError as error:
        raise UsageError(f"content_template does not give valid JSON ({error})") from None
    return body.encode("utf-8")


def check_content_template(template: Any) -> None:
    if not isinstance(template, str) or "$prompt" not in template:
        raise UsageError("content_template must be a JSON string containing $prompt, e.g. "
                         "'{\"inputs\": $prompt, \"parameters\": {\"max_new_tokens\": 64}}'")
    render_content(template, "x")


def search_output(expression: str, body: Any) -> str:
    """The text at JMESPath ``expression`` of a decoded response body."""
    import jmespath

    value = jmespath.search(expression, body)
    if value is None:
        raise ValueError(f"the response has nothing at output path {expression!r}")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "".join(value)
    if not isinstance(value, str):
        raise ValueError(f"output path {expression!r} gives a {type(value).__name__}, not text")
    return value


def decode_body(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{where} returned a body that is not JSON ({error})") from None
