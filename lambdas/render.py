"""Lambda handler of the Render state: the report from Athena and S3, published; returns result.json."""

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

logging.getLogger().setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = RenderSettings.from_environ()
    document = render_run(
        RenderEvent.model_validate(event),
        settings,
        client("s3", settings.region),
        client("athena", settings.region),
    )
    return document.model_dump(mode="json")
