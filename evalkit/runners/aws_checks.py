"""Checks of ``bedrock:``, ``bedrock-invoke:`` and ``sagemaker:`` specs before anything runs.

No call is made and no client is built: the target must be well formed, boto3 installed, a region known
(from an ARN or the standard chain) and credentials findable by the standard chain; backend options are
checked by the runners themselves when they are built.
"""

from __future__ import annotations

import re
from typing import Any

from evalkit.errors import ResourceMissingError, UsageError
from evalkit.runners.base import RUNNER_CHECKS

ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.\-:/]*$")


def check_aws_target(prefix: str, target: str, options: Any = None) -> None:
    from evalkit.runners.aws import INSTALL_HINT, aws_session, check_content_template, require_boto3, resolve_region
    from evalkit.runners.config import check_backend_keys

    target = target.strip()
    backend = getattr(options, "backend", None) or {}
    check_backend_keys(prefix, backend)
    if backend.get("content_template") is not None:
        check_content_template(backend["content_template"])
        if not backend.get("output_path"):
            raise UsageError(f"{prefix}: a content_template needs its output_path (a JMESPath into the response)")
    if backend.get("output_path") is not None:
        _check_jmespath(backend["output_path"])
    if prefix == "bedrock-invoke" and not backend.get("content_template"):
        from evalkit.runners.bedrock import FAMILIES, family_of

        if family_of(target, backend) is None:
            raise UsageError(f"bedrock-invoke:{target}: cannot tell the request format of this model; give "
                             "content_template and output_path in --model-config (or family: one of "
                             f"{', '.join(FAMILIES)})")
    if prefix == "sagemaker":
        if not ENDPOINT_NAME.match(target):
            raise UsageError(f"sagemaker:{target}: not a SageMaker endpoint name (letters, digits and hyphens, up "
                             "to 63)")
    elif not MODEL_ID.match(target):
        raise UsageError(f"{prefix}:{target}: not a Bedrock model id, inference profile id or ARN")
    require_boto3()
    resolve_region(target)
    if aws_session().get_credentials() is None:
        raise ResourceMissingError("no AWS credentials found by the standard chain (AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, or an instance role); "
                                   f"{INSTALL_HINT} installs the client only")


def _check_jmespath(expression: Any) -> None:
    import jmespath

    try:
        jmespath.compile(str(expression))
    except jmespath.exceptions.ParseError as error:
        raise UsageError(f"output_path {expression!r} is not a JMESPath expression ({error})") from None


for _prefix in ("bedrock", "bedrock-invoke", "sagemaker"):
    RUNNER_CHECKS.register(_prefix)(check_aws_target)
