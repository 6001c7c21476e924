"""The emulator in a subprocess of its own, for callers that must not share its event loop or its CPU."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import IO, Self

from fmbench.emulator.cli import PARENT_PID_ENV_VAR, READY_PREFIX, SETTINGS_JSON_OPTION
from fmbench.emulator.settings import EmulatorSettings

_STDERR_TAIL_CHARS = 4000


class EmulatorStartError(RuntimeError):
    """The emulator subprocess exited or stayed silent before announcing its URL."""


def _pump_lines(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    # Reading stdout to the end (not only the ready line) keeps the child from ever blocking on a full pipe.
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode(errors="replace").rstrip("\r\n"))
    lines.put(None)


class EmulatorProcess:
    """``with EmulatorProcess(settings) as emulator: ... emulator.url ...``

    The port comes from ``settings`` (0, the default, lets the child pick a free one and report it).
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        startup_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator process is not running")
        return self._url

    @property
    def returncode(self) -> int | None:
        """The child's exit code once it has exited, None while it runs (or was never started)."""
        return self._process.poll() if self._process is not None else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "fmbench.emulator", *self.settings_argv]

    @property
    def settings_argv(self) -> list[str]:
        """The child's settings as one JSON document: exact floats, and no second spelling of each field."""
        return [SETTINGS_JSON_OPTION, self.settings.model_dump_json()]

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        return text[-_STDERR_TAIL_CHARS:].strip()

    def _fail(self, reason: str) -> EmulatorStartError:
        self.stop()
        tail = self._stderr_tail()
        self._close_stderr()
        return EmulatorStartError(f"{reason}" + (f"; stderr:\n{tail}" if tail else "; no stderr output"))

    def start(self) -> str:
        if self._process is not None:
            raise RuntimeError("the emulator process is already started")
        # Kept open for the life of the child, so that its stderr can be quoted if it fails.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        # The child outlives no parent: it gets a parent-death signal (Linux) and watches its stdin, a pipe
        # only this process holds open. In a process group of its own, a terminal's Ctrl-C reaches only
        # the parent, which flushes what it measured before it stops the child.
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, PARENT_PID_ENV_VAR: str(os.getpid())},
            process_group=0,
        )
        assert self._process.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(
            target=_pump_lines,
            args=(self._process.stdout, lines),
            name="fmbench-emulator-stdout",
            daemon=True,
        )
        self._reader.start()
        deadline_s = time.monotonic() + self.startup_timeout_s
        while True:
            remaining_s = deadline_s - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining_s, 0.0))
            except queue.Empty:
                raise self._fail(
                    f"the emulator did not report ready within {self.startup_timeout_s:g} s"
                ) from None
            if line is None:
                self._process.wait()
                code = self._process.returncode
                raise self._fail(f"the emulator exited with code {code} before reporting ready")
            if line.startswith(READY_PREFIX + " "):
                self._url = line[len(READY_PREFIX) + 1 :].strip()
                return self._url

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=self.stop_timeout_s)
        for pipe in (process.stdout, process.stdin):
            if pipe is not None:
                pipe.close()
        self._process = None
        self._reader = None
        self._url = None

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        self._close_stderr()
