"""Endpoint clients: one per wire protocol, all returning the same InvocationResult."""

from fmbench.endpoints.base import (
    CLIENT_ERROR,
    CONNECTION_ERROR,
    ERROR_CLASSES,
    HTTP_4XX,
    HTTP_5XX,
    HTTP_429,
    MALFORMED_RESPONSE,
    STREAM_CUT,
    TIMEOUT,
    EndpointClient,
    InvocationResult,
)
from fmbench.endpoints.openai import OpenAIClient

__all__ = [
    "CLIENT_ERROR",
    "CONNECTION_ERROR",
    "ERROR_CLASSES",
    "HTTP_4XX",
    "HTTP_5XX",
    "HTTP_429",
    "MALFORMED_RESPONSE",
    "STREAM_CUT",
    "TIMEOUT",
    "EndpointClient",
    "InvocationResult",
    "OpenAIClient",
]
