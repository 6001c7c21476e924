"""Lambda handler of the Teardown state: delete the branch's endpoint, endpoint config and model."""

from __future__ import annotations

import logging
from typing import Any

from fmbench.cloud.aws import client
from fmbench.cloud.events import TeardownEvent
from fmbench.cloud.limits import MAX_TEARDOWN_MESSAGE_BYTES, bounded_text
from fmbench.cloud.settings import TeardownSettings
from fmbench.cloud.steps import teardown_branch
from fmbench.deployment import EndpointBusyError

logger = logging.getLogger()
logger.setLevel(logging.INFO)


class TeardownFailedError(RuntimeError):
    """Teardown failed (after the error it names): raised with a short message and a one-frame trace."""


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A failure leaves the state machine with a bounded Cause: after its retries the TeardownFailed state
    puts that Cause into the Map's results, where a long trace per branch would outgrow 256 KiB."""
    try:
        settings = TeardownSettings.from_environ()
        teardown_event = TeardownEvent.model_validate(event)
        sagemaker = client("sagemaker", teardown_event.endpoint_region(settings.region))
        s3 = client("s3", settings.region) if settings.results_bucket else None
        ec2 = (
            client("ec2", teardown_event.endpoint_region(settings.region))
            if teardown_event.platform == "ec2"
            else None
        )
        return teardown_branch(teardown_event, sagemaker, settings, s3, ec2_client=ec2).model_dump(
            mode="json"
        )
    except EndpointBusyError:
        raise  # retried by its name; its message is one line
    except Exception as exc:
        logger.exception("teardown failed")  # the whole trace, in the function's log
        message = bounded_text(f"{type(exc).__name__}: {exc}", MAX_TEARDOWN_MESSAGE_BYTES)
        raise TeardownFailedError(message) from None
