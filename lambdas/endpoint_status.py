"""Lambda handler of the EndpointStatus state: Creating, InService or Failed, and why it failed."""

from __future__ import annotations

import logging
from typing import Any

from fmbench.cloud.aws import client
from fmbench.cloud.events import BranchItem
from fmbench.cloud.settings import StatusSettings
from fmbench.cloud.steps import check_endpoint

logging.getLogger().setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = StatusSettings.from_environ()
    item = BranchItem.model_validate(event)
    sagemaker = client("sagemaker", item.endpoint_region(settings.region))
    ec2 = client("ec2", item.endpoint_region(settings.region)) if item.platform == "ec2" else None
    result = check_endpoint(item, settings, sagemaker, client("s3", settings.region), ec2)
    return result.model_dump(mode="json")
