"""Command line of the emulator (``python -m fmbench.emulator`` and ``fmbench emulator``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading
from typing import TextIO

from pydantic import ValidationError

from fmbench.emulator.profiles import PROFILES
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings, add_settings_options, settings_from_options

READY_PREFIX = "FMBENCH_EMULATOR_READY"
# The option by which a parent (``EmulatorProcess``) hands its child the settings as one JSON document.
SETTINGS_JSON_OPTION = "--settings-json"
# Set by a parent (``EmulatorProcess``) to its pid: the child then stops when that parent is gone.
PARENT_PID_ENV_VAR = "FMBENCH_EMULATOR_PARENT_PID"
_PR_SET_PDEATHSIG = 1
# The parent-death signal: Linux sends it when the *thread* that started the child ends, which is not
# always the parent's end (``EmulatorProcess.start`` often runs in a worker thread), so it is a signal the
# child handles by checking whether its parent is really gone, never one that ends it outright.
PARENT_DEATH_SIGNAL = signal.SIGUSR2


def _ask_for_parent_death_signal() -> None:
    """Linux: the kernel signals this process when the thread that started it ends, whatever ended the
    parent (SIGKILL included). Elsewhere (or if refused) the stdin watch still works."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
    except (OSError, AttributeError):
        return


def watch_parent(stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
    """Stop when the parent named in the environment is gone, whatever ended it: on the parent-death
    signal (Linux), when stdin (a pipe only the parent holds open) reaches its end, and at once if the
    parent was gone before the watch began."""
    parent = os.environ.get(PARENT_PID_ENV_VAR)
    if not parent:
        return

    def check() -> None:
        if str(os.getppid()) != parent:
            stop.set()

    loop.add_signal_handler(PARENT_DEATH_SIGNAL, check)
    _ask_for_parent_death_signal()
    check()

    def read_to_end() -> None:
        # The file descriptor itself, not sys.stdin: a daemon thread blocked in a buffered read holds the
        # reader's lock, and an interpreter that exits meanwhile (a failed start) aborts on that lock.
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read_to_end, name="fmbench-parent-watch", daemon=True).start()


def build_parser(prog: str = "python -m fmbench.emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve an emulated model endpoint (OpenAI API, SageMaker runtime and Bedrock Converse, "
        "all on one port) with the speed and price of an instance profile, or with fixed timings.",
    )
    add_settings_options(parser)
    parser.add_argument(SETTINGS_JSON_OPTION, metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument("--list-profiles", action="store_true", help="print the profiles and exit")
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    """The settings of a parsed command line: the JSON document a parent passed, or the options."""
    if args.settings_json is not None:
        return EmulatorSettings.model_validate_json(args.settings_json)
    return settings_from_options(args)


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
    watch_parent(stop, loop)
    try:
        async with running_emulator(settings) as url:
            stream = out or sys.stdout
            print(f"{READY_PREFIX} {url}", file=stream, flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, PARENT_DEATH_SIGNAL):
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
