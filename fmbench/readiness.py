"""Waiting for a launched server to answer: an ec2 branch's runner asks its health path before the load.

The instance is running long before its container has pulled the image and loaded the model; the runner,
which sits in the VPC beside it, polls every copy's health URL until all answer 2xx or the deadline passes
(the stack's deployment allowance, fixed in the spec at Plan), and then fails the branch with a clear error.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

from fmbench.spec import BranchSpec

HEALTH_TIMEOUT_S = 5.0


class ServerNeverReadyError(RuntimeError):
    """The server did not answer its health path within the deployment allowance."""


def health_urls(spec: BranchSpec) -> list[str]:
    """``http://IP:PORT/health`` of each model copy (the balancer's port when there is one copy)."""
    deployment = spec.ec2_deployment
    if deployment is None or not spec.ec2_endpoint_url:
        return []
    host = urlsplit(spec.ec2_endpoint_url).hostname
    return [f"http://{host}:{port}{deployment.health_path}" for port in deployment.copy_ports]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def wait_until_ready(
    spec: BranchSpec, poll_s: float | None = None, clock: Callable[[], float] = time.monotonic
) -> float:
    """Poll until every copy answers; returns the seconds waited. Raises ``ServerNeverReadyError``."""
    deployment = spec.ec2_deployment
    urls = health_urls(spec)
    if deployment is None or not urls:
        raise ServerNeverReadyError(f"branch {spec.branch_id}: no instance URL to wait for")
    deadline_s = deployment.ready_timeout_s
    interval = poll_s if poll_s is not None else min(10.0, max(0.5, deadline_s / 20))
    started = clock()
    waiting = list(urls)
    while True:
        answers = await asyncio.gather(*(asyncio.to_thread(_answers, url) for url in waiting))
        waiting = [url for url, ok in zip(waiting, answers, strict=True) if not ok]
        if not waiting:
            return clock() - started
        if clock() - started >= deadline_s:
            raise ServerNeverReadyError(
                f"the {deployment.image} server did not answer {', '.join(waiting)} within {deadline_s:g} s "
                f"(see {'/var/log/fmbench-serving.log'} on the instance); the instance is terminated"
            )
        await asyncio.sleep(interval)
