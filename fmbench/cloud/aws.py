"""boto3 clients for the control-plane calls of the workflow and the CLI, all with the same retry policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config

# Throttling and 5xx answers of control-plane APIs (CreateEndpoint, StartExecution, ...) are transient: the
# 'standard' mode retries them with jittered backoff, and five attempts outlast a short burst. (botocore's
# "max_attempts" counts retries only; "total_max_attempts" counts what the name says.)
RETRY_MODE: Final = "standard"
RETRY_MAX_ATTEMPTS: Final = 5


def retry_config() -> Config:
    from botocore.config import Config

    return Config(retries={"mode": RETRY_MODE, "total_max_attempts": RETRY_MAX_ATTEMPTS})


def client(service: str, region: str | None = None, session: boto3.Session | None = None) -> Any:
    """A client of ``service`` with the retry policy; the region defaults to the session's (AWS_REGION).

    Clients are made when a step runs, never at import (boto3 itself is imported here, not at module level,
    because fmbench.plan reaches this package and the local run needs no AWS), so tests can start their AWS
    mocks before any client exists. Without ``session``, boto3's default session is used: it keeps the
    parsed service models (half a second each for SageMaker) for every later client of a warm Lambda.
    """
    import boto3

    if session is None:
        return boto3.client(service, region_name=region, config=retry_config())
    return session.client(service, region_name=region, config=retry_config())


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return str(exc)
    return str(response.get("Error", {}).get("Message", "")) or str(exc)
