"""Lambda handler of the Deploy state: create (or find) the branch's SageMaker model, config and endpoint."""

from __future__ import annotations

import logging
from typing import Any

from fmbench.cloud.aws import client
from fmbench.cloud.events import BranchItem
from fmbench.cloud.settings import DeploySettings
from fmbench.cloud.steps import deploy_branch

logging.getLogger().setLevel(logging.INFO)
# At DEBUG, botocore logs request parameters and response bodies: CreateModel's container environment and
# GetSecretValue's answer, i.e. the secret. Pinned, so that no log level set for the root reaches them.
logging.getLogger("botocore").setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = DeploySettings.from_environ()
    result = deploy_branch(BranchItem.model_validate(event), settings, client("s3", settings.region), client)
    return result.model_dump(mode="json")
