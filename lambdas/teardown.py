"""Lambda handler of the Teardown state: delete the branch's endpoint, endpoint config and model."""

from __future__ import annotations

import logging
from typing import Any

from fmbench.cloud.aws import client
from fmbench.cloud.events import TeardownEvent
from fmbench.cloud.settings import TeardownSettings
from fmbench.cloud.steps import teardown_branch

logging.getLogger().setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = TeardownSettings.from_environ()
    teardown_event = TeardownEvent.model_validate(event)
    sagemaker = client("sagemaker", teardown_event.endpoint_region(settings.region))
    s3 = client("s3", settings.region) if settings.results_bucket else None
    return teardown_branch(teardown_event, sagemaker, settings, s3).model_dump(mode="json")
