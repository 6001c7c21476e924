"""From a suite's emulator target to the settings of the emulator that serves it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fmbench.config import EmulatorTarget
    from fmbench.emulator.server import EmulatorSettings


def emulator_settings_for(target: EmulatorTarget) -> EmulatorSettings:
    """The emulator a target asks for, on a free loopback port."""
    from fmbench.emulator.server import EmulatorSettings

    options = target.emulator
    fixed = options.ttft_ms is not None
    return EmulatorSettings(
        host="127.0.0.1",
        port=0,
        model=target.model or "emulated-model",
        profile=None if fixed else options.profile,
        ttft_ms=options.ttft_ms,
        itl_ms=options.itl_ms,
        output_tokens=options.output_tokens,
        error_500_rate=options.error_500_rate,
        error_429_rate=options.error_429_rate,
        hang_rate=options.hang_rate,
        cut_stream_rate=options.cut_stream_rate,
        malformed_event_rate=options.malformed_event_rate,
        seed=options.seed,
    )
