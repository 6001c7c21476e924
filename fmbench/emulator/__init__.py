"""Local OpenAI-compatible endpoint emulator: stand-in instances for the demo, exact timings for tests."""

from fmbench.emulator.cli import main
from fmbench.emulator.engine import BatchEngine, VirtualClock
from fmbench.emulator.process import EmulatorProcess, EmulatorStartError
from fmbench.emulator.profiles import PROFILES, EmulatorProfile, UnknownProfileError, get_profile
from fmbench.emulator.server import EmulatorSettings, build_app, running_emulator

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
