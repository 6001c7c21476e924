"""Command line of the emulator (``python -m fmbench.emulator`` and ``fmbench emulator``)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TextIO

from pydantic import ValidationError

from fmbench.emulator.profiles import DEFAULT_PROFILE, PROFILES
from fmbench.emulator.server import EmulatorSettings, running_emulator

READY_PREFIX = "FMBENCH_EMULATOR_READY"

# Settings field -> command-line option; settings_to_argv and the parser both read this, so they agree.
_OPTIONS: dict[str, str] = {
    "host": "--host",
    "port": "--port",
    "model": "--model",
    "profile": "--profile",
    "ttft_ms": "--ttft-ms",
    "itl_ms": "--itl-ms",
    "output_tokens": "--output-tokens",
    "error_500_rate": "--error-500-rate",
    "error_429_rate": "--error-429-rate",
    "hang_rate": "--hang-rate",
    "cut_stream_rate": "--cut-stream-rate",
    "malformed_event_rate": "--malformed-event-rate",
    "sagemaker_format": "--sagemaker-format",
    "seed": "--seed",
}


def build_parser(prog: str = "python -m fmbench.emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve an emulated model endpoint (OpenAI API, SageMaker runtime and Bedrock Converse, "
        "all on one port) with the speed and price of an instance profile, or with fixed timings.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add("--port", type=int, default=8080, help="port to listen on; 0 picks a free one (default: %(default)s)")
    add("--model", default="emulated-model", help="model id served (default: %(default)s)")
    add(
        "--profile",
        metavar="NAME",
        help=f"performance profile (default: {DEFAULT_PROFILE}; see --list-profiles)",
    )
    fixed = parser.add_argument_group("fixed timing (all three or none; overrides the profile's timing)")
    fixed.add_argument("--ttft-ms", type=float, help="time to first token of every request")
    fixed.add_argument("--itl-ms", type=float, help="gap between consecutive tokens")
    fixed.add_argument("--output-tokens", type=int, help="tokens generated (fewer if max_tokens is lower)")
    faults = parser.add_argument_group("fault injection (fractions of requests, in [0, 1])")
    faults.add_argument("--error-500-rate", type=float, default=0.0, help="answer HTTP 500")
    faults.add_argument("--error-429-rate", type=float, default=0.0, help="answer HTTP 429 with Retry-After")
    faults.add_argument("--hang-rate", type=float, default=0.0, help="never answer (until the client leaves)")
    faults.add_argument("--cut-stream-rate", type=float, default=0.0, help="drop the connection mid-response")
    faults.add_argument(
        "--malformed-event-rate",
        type=float,
        default=0.0,
        help="send one unparsable event mid-stream (a bad CRC on Bedrock), or an unparsable body",
    )
    add(
        "--sagemaker-format",
        choices=("lmi", "tgi", "vllm"),
        default="lmi",
        help="answer style of SageMaker invocations with an {inputs, parameters} body (default: %(default)s)",
    )
    add("--seed", type=int, default=0, help="seed of the timing jitter and of the fault draws")
    add("--list-profiles", action="store_true", help="print the profiles and exit")
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    return EmulatorSettings(**{field: getattr(args, field) for field in _OPTIONS})


def settings_to_argv(settings: EmulatorSettings) -> list[str]:
    """Command-line arguments that reproduce ``settings`` (used to start the emulator as a subprocess)."""
    argv: list[str] = []
    for field, option in _OPTIONS.items():
        value = getattr(settings, field)
        if value is not None:
            argv += [option, repr(value) if isinstance(value, float) else str(value)]
    return argv


def format_profiles() -> str:
    rows = [("profile", "instance type", "USD/hour", "max batch", "description")]
    rows += [
        (p.name, p.instance_type, f"{p.price_per_hour_usd:.3f}", str(p.max_batch), p.instance_description)
        for p in PROFILES.values()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for name, instance_type, price, batch, description in rows:
        cells = [
            name.ljust(widths[0]),
            instance_type.ljust(widths[1]),
            price.rjust(widths[2]),
            batch.rjust(widths[3]),
            description,
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _validation_message(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(problems)


async def serve(settings: EmulatorSettings, out: TextIO | None = None) -> None:
    """Serve until SIGTERM or SIGINT, announcing the URL once the socket is bound."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running_emulator(settings) as url:
            stream = out or sys.stdout
            print(f"{READY_PREFIX} {url}", file=stream, flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_profiles:
        print(format_profiles())
        return 0
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"{parser.prog}: error: {_validation_message(exc)}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        print(
            f"{parser.prog}: error: cannot serve on {settings.host}:{settings.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0
