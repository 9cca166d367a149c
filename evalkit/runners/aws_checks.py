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
    from evalkit.runners.aws import INSTALL_HINT, aws_session, require_boto3, resolve_region

    target = target.strip()
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


for _prefix in ("bedrock", "bedrock-invoke", "sagemaker"):
    RUNNER_CHECKS.register(_prefix)(check_aws_target)
