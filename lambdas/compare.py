"""Lambda handler of the Compare state: the rendered run against its baseline; returns the run's summary."""

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
from fmbench.cloud.events import CompareEvent
from fmbench.cloud.settings import RenderSettings
from report.cloud_compare import compare_run
from report.execution_output import execution_output

logging.getLogger().setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The same bounded summary Render returns, now with the verdict (result.json holds every finding)."""
    settings = RenderSettings.from_environ()
    document = compare_run(
        CompareEvent.model_validate(event),
        settings,
        client("s3", settings.region),
        client("athena", settings.region),
    )
    return execution_output(document).model_dump(mode="json")
