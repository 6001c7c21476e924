"""Local OpenAI-compatible endpoint emulator: stand-in instances for the demo, exact timings for tests.

The names below load on first use: validating a suite imports ``fmbench.emulator.settings`` and must not
pay for the HTTP server (aiohttp's) on the way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fmbench.emulator.cli import main
    from fmbench.emulator.engine import BatchEngine, VirtualClock
    from fmbench.emulator.process import EmulatorProcess, EmulatorStartError
    from fmbench.emulator.profiles import PROFILES, EmulatorProfile, UnknownProfileError, get_profile
    from fmbench.emulator.server import build_app, running_emulator
    from fmbench.emulator.settings import EmulatorSettings

_HOMES = {
    "main": "cli",
    "BatchEngine": "engine",
    "VirtualClock": "engine",
    "EmulatorProcess": "process",
    "EmulatorStartError": "process",
    "PROFILES": "profiles",
    "EmulatorProfile": "profiles",
    "UnknownProfileError": "profiles",
    "get_profile": "profiles",
    "build_app": "server",
    "running_emulator": "server",
    "EmulatorSettings": "settings",
}

__all__ = [
    "PROFILES",
    "BatchEngine",
    "EmulatorProcess",
    "EmulatorProfile",
    "EmulatorSettings",
    "EmulatorStartError",
    "UnknownProfileError",
    "VirtualClock",
    "build_app",
    "get_profile",
    "main",
    "running_emulator",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
