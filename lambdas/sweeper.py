"""Lambda handler of the scheduled sweep: delete product resources whose run ended or whose TTL passed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fmbench.cloud.aws import client
from fmbench.cloud.cleanup import sweep
from fmbench.cloud.settings import SweeperSettings

logging.getLogger().setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The schedule's event carries nothing the sweep needs; busy endpoints wait for the next sweep."""
    settings = SweeperSettings.from_environ()
    sfn = client("stepfunctions", settings.region)
    now = datetime.now(UTC)
    regions = {
        region: sweep(
            client("sagemaker", region),
            sfn,
            settings.state_machine_arn,
            now,
            settings.default_ttl_s,
            ec2_client=client("ec2", region),
        ).model_dump(mode="json")
        for region in settings.regions
    }
    return {"swept_at": now.isoformat(timespec="seconds"), "regions": regions}
