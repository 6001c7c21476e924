"""Lambda handler of the Plan state: check suite, cost and quotas, write the specs, return the Map's items."""

from __future__ import annotations

import logging
from typing import Any

from fmbench.cloud.aws import client
from fmbench.cloud.events import PlanEvent
from fmbench.cloud.settings import PlanSettings
from fmbench.cloud.steps import plan_run
from report.query import athena_metrics_query

logging.getLogger().setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = PlanSettings.from_environ()
    result = plan_run(
        PlanEvent.model_validate(event),
        settings,
        client("s3", settings.region),
        athena_metrics_query,
        client_factory=client,
    )
    return result.model_dump(mode="json")
