"""What the SageMaker and Bedrock runtime clients share: one aiobotocore client, the probe, error classes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from typing import Any, ClassVar, TypedDict

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.awsrequest import AWSPreparedRequest
from botocore.eventstream import ParserError as EventStreamParserError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    EventStreamError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.exceptions import (
    ProxyConnectionError as BotoProxyConnectionError,
)
from botocore.loaders import Loader, create_loader
from botocore.parsers import ResponseParserError

from fmbench.endpoints.base import (
    CLIENT_ERROR,
    CONNECTION_ERROR,
    HTTP_4XX,
    HTTP_5XX,
    HTTP_429,
    MALFORMED_RESPONSE,
    STREAM_CUT,
    TIMEOUT,
    InvocationResult,
    mark_sent,
)

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 120.0
_DEFAULT_PROBE_TIMEOUT_S = 5.0

# Error codes (compared in lower case) that mean "slow down" whatever HTTP status carries them. SageMaker's
# ModelNotReadyException is a 429 too: the model is still loading, try again later.
_THROTTLING_CODES = frozenset(
    {
        "throttlingexception",
        "throttledexception",
        "throttling",
        "toomanyrequestsexception",
        "requestlimitexceeded",
        "provisionedthroughputexceededexception",
        "modelnotreadyexception",
    }
)
# Model errors carry the container's own status, which says more than the 424 they travel in (error events
# inside a stream lose it: botocore keeps only their code and message, so they count as server errors).
_MODEL_ERROR_CODES = frozenset(
    {"modelerror", "modelerrorexception", "modelstreamerror", "modelstreamerrorexception"}
)
_SERVER_ERROR_CODES = frozenset(
    {
        "internalfailure",
        "internalserverexception",
        "internalstreamfailure",
        "internaldependencyexception",
        "serviceunavailable",
        "serviceunavailableexception",
        "modeltimeoutexception",
    }
)
_CLIENT_ERROR_CODES = frozenset(
    {
        "validationerror",
        "validationexception",
        "accessdeniedexception",
        "resourcenotfoundexception",
        "unrecognizedclientexception",
        "expiredtokenexception",
    }
)


class MalformedEventError(ValueError):
    """An answer or event that botocore parsed but that lacks what its type promises (a delta without its
    text, a Converse answer without its content)."""


def _status_class(status: int | None) -> str:
    if status == 429:
        return HTTP_429
    if status is not None and 400 <= status < 500:
        return HTTP_4XX
    return HTTP_5XX


def classify_client_error(exc: ClientError) -> tuple[str, str, int | None]:
    """Error class, message and HTTP status of an AWS error answer or of an error event inside a stream."""
    response: dict[str, Any] = exc.response or {}
    error = response.get("Error") or {}
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if isinstance(exc, EventStreamError):
        status = None  # the stream itself was an HTTP 200; the 400 botocore gives the event is made up
    lowered = code.lower()
    text = f"{code}: {message}" if message else code
    if lowered in _THROTTLING_CODES:
        return HTTP_429, text, status
    if lowered in _MODEL_ERROR_CODES:
        original = response.get("OriginalStatusCode", response.get("originalStatusCode"))
        original_status = original if isinstance(original, int) else None
        if original_status is not None:
            text = f"{code} (container status {original_status}): {message}"
        return _status_class(original_status), text, status
    if lowered in _SERVER_ERROR_CODES:
        return HTTP_5XX, text, status
    if lowered in _CLIENT_ERROR_CODES:
        return HTTP_4XX, text, status
    return _status_class(status if isinstance(status, int) else None), text, status


def record_failure(result: InvocationResult, exc: BaseException, timeout_s: float) -> None:
    """Mark ``result`` failed by what an aiobotocore call raised, unless its answer was already complete."""
    if result.end_perf_s:
        return  # a failure after the complete answer (draining the connection) does not undo it
    if isinstance(exc, TimeoutError):
        result.fail(TIMEOUT, f"no complete response within {timeout_s:g} s")
        return
    error_class, message, status = classify_failure(exc, response_started=result.http_status is not None)
    result.fail(error_class, message, http_status=status)


def classify_failure(exc: BaseException, *, response_started: bool) -> tuple[str, str, int | None]:
    """The error class of anything an aiobotocore call or its stream can raise.

    A connection that could not be made is ``connection_error``; one the server closed once it was made
    (before the status line or in the middle of the body, streamed or not) is ``stream_cut``, the same
    rule as the OpenAI client's (docs/metrics.md, "Error classes").
    """
    name = type(exc).__name__
    if isinstance(exc, TimeoutError | ReadTimeoutError | ConnectTimeoutError):
        return TIMEOUT, f"{name}: {exc}", None
    if isinstance(exc, ClientError):
        return classify_client_error(exc)
    if isinstance(
        exc,
        EventStreamParserError
        | ResponseParserError
        | ValueError
        | KeyError
        | IndexError
        | TypeError
        | AttributeError,
    ):
        return MALFORMED_RESPONSE, f"{name}: {exc}", None
    if isinstance(exc, EndpointConnectionError | BotoProxyConnectionError | aiohttp.ClientConnectorError):
        return CONNECTION_ERROR, f"{name}: {exc}", None
    if isinstance(exc, BotoConnectionError | HTTPClientError | aiohttp.ClientError | OSError):
        where = "mid-answer" if response_started else "before the answer"
        return STREAM_CUT, f"connection lost {where}: {name}: {exc}", None
    return CLIENT_ERROR, f"{name}: {exc}", None


@functools.cache
def _shared_loader() -> Loader:
    """One cache of botocore's service models for every client of the process.

    Each session would otherwise decompress and parse the same model files again (some 100 ms per
    client); with branches sharing an event loop, that time would be taken from their measurements.
    """
    return create_loader(os.environ.get("AWS_DATA_PATH"))


def resolve_region(region: str | None) -> str | None:
    """The target's region, else the runtime's (AWS_REGION is what Lambda and ECS set); None lets botocore
    look further (AWS_DEFAULT_REGION, the config file)."""
    return region or os.environ.get("AWS_REGION") or None


def _mark_sent_before_send(**_kwargs: Any) -> None:
    """botocore's ``before-send`` handler: stamps the send time, and lets the request go (returns None)."""
    mark_sent()


class AwsClientOptions(TypedDict, total=False):
    """How an AWS runtime client reaches its service; the same for SageMaker and Bedrock."""

    region: str | None
    endpoint_url: str | None
    max_connections: int
    connect_timeout_s: float
    read_timeout_s: float


class AwsRuntimeClient:
    """One aiobotocore client per branch, built on first use and closed by ``aclose``.

    aiobotocore runs every request on the event loop (no thread per request), so a thousand requests in
    flight cost a thousand sockets, not a thousand threads. The pool is as large as the branch's highest
    concurrency, so the client never queues requests of its own. botocore's retries are off: the load
    runner records every attempt, and a retry hidden inside the client would bill two attempts' latency
    to one record and hide the throttling a report must show.
    """

    service_name: ClassVar[str]
    # Bedrock also accepts an API key (bearer token) instead of AWS credentials.
    bearer_token_env: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        max_connections: int = 100,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.region = resolve_region(region)
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.max_connections = max_connections
        self._config = AioConfig(
            max_pool_connections=max_connections,
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # Model files are read in a thread, not on the event loop that times other requests.
            warm_up_loader_caches=True,
        )
        self._session = AioSession()
        self._session.register_component("data_loader", _shared_loader())
        self._exit_stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _get_client(self) -> Any:
        # Built lazily (and once, however many requests start together) because aiobotocore clients are
        # async context managers that must be entered inside the event loop that uses them.
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    client = await self._exit_stack.enter_async_context(
                        self._session.create_client(
                            self.service_name,
                            region_name=self.region,
                            endpoint_url=self.endpoint_url,
                            config=self._config,
                        )
                    )
                    # A request is sent when the SDK hands it, built and signed, to its HTTP session.
                    service_id = client.meta.service_model.service_id.hyphenize()
                    client.meta.events.register(f"before-send.{service_id}", _mark_sent_before_send)
                    self._client = client
        return self._client

    async def open_connections(self, count: int, timeout_s: float = _DEFAULT_PROBE_TIMEOUT_S) -> None:
        """Nothing: the SDK offers no request that opens a connection without invoking a model (billed)."""

    async def aclose(self) -> None:
        self._client = None
        await self._exit_stack.aclose()
        self._exit_stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> AwsRuntimeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def probe(self, timeout_s: float = _DEFAULT_PROBE_TIMEOUT_S) -> str | None:
        """None when requests can be signed and the runtime host answers HTTP at all.

        A real invocation would cost a generation (and for SageMaker needs a body the container accepts),
        and ``DescribeEndpoint`` is a control-plane call the runner's role may not be allowed to make. So the
        probe checks what fails every request alike: no region, no credentials, a host that cannot be
        reached. It sends an unsigned GET to the runtime's root through the client's own connection pool:
        any answer (AWS says 403 or 404) will do. An endpoint name that does not exist is caught by the
        first requests (ValidationError, http_4xx), which stop the branch.
        """
        url = self.endpoint_url or self.service_name
        try:
            async with asyncio.timeout(timeout_s):
                client = await self._get_client()
                url = str(client.meta.endpoint_url)
                if not (self.bearer_token_env and os.environ.get(self.bearer_token_env)):
                    credentials = await self._session.get_credentials()
                    if credentials is None:
                        return "no AWS credentials found (environment, profile, container or instance role)"
                await _reach(client, url)
        except TimeoutError:
            return f"no answer from {url} within {timeout_s:g} s"
        except (BotoConnectionError, HTTPClientError) as exc:
            return f"cannot connect to {url}: {exc}"
        except BotoCoreError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


async def _reach(client: Any, url: str) -> None:
    """One unsigned GET through the client's HTTP session, whatever the answer.

    Besides proving the host answers, it makes aiobotocore build its connection pool and TLS context
    (loading the CA bundle takes some 50 ms, in a thread) now, rather than inside the first measured
    request, which every request of the first wave would wait for. The HTTP session is reached through
    the client's ``_endpoint``: botocore has no public handle on it.
    """
    request = AWSPreparedRequest("GET", url.rstrip("/") + "/", {}, None, stream_output=False)
    await client._endpoint.http_session.send(request)
