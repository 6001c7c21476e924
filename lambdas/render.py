"""Lambda handler of the Render state: the report from Athena and S3, published; returns its summary."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

# Lambda's home is read-only: matplotlib's cache goes to /tmp (set before report imports matplotlib).
os.environ.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / "matplotlib"))
os.environ.setdefault("MPLBACKEND", "Agg")

from fmbench.cloud.aws import client
from fmbench.cloud.events import RenderEvent
from fmbench.cloud.settings import RenderSettings
from report.cloud import render_run
from report.execution_output import execution_output

logging.getLogger().setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The execution's output is the bounded summary: result.json itself may exceed Step Functions' 256 KiB
    state limit (docs/workflow.md), so it stays in S3, where the summary points."""
    settings = RenderSettings.from_environ()
    document = render_run(
        RenderEvent.model_validate(event),
        settings,
        client("s3", settings.region),
        client("athena", settings.region),
        cloudwatch_for=lambda region: client("cloudwatch", region or settings.region),
    )
    return execution_output(document).model_dump(mode="json")
