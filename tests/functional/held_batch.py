"""An emulator profile whose batch stays full: no prefill cost and a first decode step of 60 s, so a request
of more than one output token holds its batch slot (or its place in the queue) for the rest of a test,
while one of ``max_tokens`` 1 is answered at its prefill. Running and waiting counts are then exact."""

from __future__ import annotations

from fmbench.emulator.profiles import EmulatorProfile


def held_batch_profile(max_batch: int) -> EmulatorProfile:
    return EmulatorProfile(
        name=f"held-batch-{max_batch}",
        instance_type="ml.test",
        price_per_hour_usd=1.0,
        prefill_base_ms=0,
        prefill_ms_per_token=0,
        decode_base_ms=60_000,
        decode_ms_per_seq=0,
        max_batch=max_batch,
    )
