"""A stand-in for the AWS Price List API on loopback, serving recorded GetProducts pages.

moto has no ``pricing`` service, so botocore's own client talks to this server through ``endpoint_url``:
the JSON 1.1 protocol (``POST /``, ``X-Amz-Target: AWSPriceListService.GetProducts``). Each service's pages
are files ``pricing_pages/<ServiceCode>-<n>.json`` in order; a page's ``NextToken`` must come back to get
the next one, as the API requires. Every request's body is kept for the test to read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PAGES_DIR = Path(__file__).parent / "pricing_pages"
TARGET = "AWSPriceListService.GetProducts"


def recorded_pages(service: str) -> list[dict[str, Any]]:
    files = sorted(PAGES_DIR.glob(f"{service}-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [json.loads(path.read_text(encoding="utf-8")) for path in files]


@dataclass
class PricingStandIn:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: str | None = None  # an error code every request gets, e.g. AccessDeniedException


def _handler(state: PricingStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            state.requests.append(body)
            if self.headers.get("X-Amz-Target") != TARGET:
                self._send(400, {"__type": "UnknownOperationException", "message": "unknown operation"})
                return
            if state.fail_with is not None:
                self._send(400, {"__type": state.fail_with, "message": "refused by the stand-in"})
                return
            pages = recorded_pages(body.get("ServiceCode", ""))
            token = body.get("NextToken")
            index = 0
            if token is not None:
                tokens = [page.get("NextToken") for page in pages]
                if token not in tokens:
                    self._send(400, {"__type": "InvalidNextTokenException", "message": "bad token"})
                    return
                index = tokens.index(token) + 1
            page = pages[index] if index < len(pages) else {"FormatVersion": "aws_v1", "PriceList": []}
            self._send(200, page)

    return Handler


@contextmanager
def pricing_standin() -> Iterator[PricingStandIn]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(PricingStandIn(url="")))
    state = PricingStandIn(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
