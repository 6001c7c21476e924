"""Lambda handler for an execution's end (EventBridge): delete whatever its run left, found by its tags."""

from __future__ import annotations

import logging
from typing import Any

from fmbench.cloud.aws import client
from fmbench.cloud.cleanup import ExecutionStatusEvent, cleanup_after_execution
from fmbench.cloud.settings import CleanupSettings
from fmbench.deployment import EndpointBusyError

logging.getLogger().setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The event carries the execution input (the suite): it is parsed, never logged.

    An endpoint still being created cannot be deleted yet: everything else is deleted, then the error
    makes Lambda retry the asynchronous invocation; the scheduled sweeper catches what is left after that.
    """
    settings = CleanupSettings.from_environ()
    result = cleanup_after_execution(ExecutionStatusEvent.model_validate(event), settings.region, client)
    if result.busy:
        raise EndpointBusyError(f"run {result.run_id}: not deletable yet: {', '.join(result.busy)}")
    return result.model_dump(mode="json")
