"""Unit tests of the emulator's model: profiles, settings, request parsing and the engine's exact schedule."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from pydantic import ValidationError

from fmbench.emulator import (
    PROFILES,
    BatchEngine,
    EmulatorProfile,
    EmulatorSettings,
    UnknownProfileError,
    VirtualClock,
    get_profile,
)
from fmbench.emulator.cli import build_parser, main, settings_from_args
from fmbench.emulator.engine import Sequence, fixed_token_times_s
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.protocol import (
    InvalidRequestError,
    ParsedRequest,
    ResponseWriter,
    generated_token,
    parse_request,
)
from fmbench.tokenizer import get_tokenizer

# ------------------------------------------------------------------------------------------ profiles


def test_demo_profiles_have_their_instance_types_prices_and_batches() -> None:
    expected = {
        "g5-xlarge": ("ml.g5.xlarge", 1.408, 4),
        "g5-2xlarge": ("ml.g5.2xlarge", 1.515, 32),
        "g5-12xlarge": ("ml.g5.12xlarge", 7.09, 64),
    }
    for name, (instance_type, price_usd, max_batch) in expected.items():
        profile = get_profile(name)
        assert profile.name == name
        assert (profile.instance_type, profile.price_per_hour_usd, profile.max_batch) == (
            instance_type,
            price_usd,
            max_batch,
        )
    assert all(name == profile.name for name, profile in PROFILES.items())


def test_unknown_profile_error_lists_valid_names() -> None:
    with pytest.raises(UnknownProfileError) as excinfo:
        get_profile("g9-huge")
    assert isinstance(excinfo.value, ValueError)
    for name in PROFILES:
        assert name in str(excinfo.value)


def test_profiles_are_frozen() -> None:
    with pytest.raises(ValidationError):
        get_profile("g5-xlarge").max_batch = 99  # type: ignore[misc]


def test_profile_duration_formulas() -> None:
    profile = _profile(prefill_base_ms=10, prefill_ms_per_token=0.5, decode_base_ms=20, decode_ms_per_seq=2)
    assert profile.prefill_ms(100) == 60
    assert profile.decode_step_ms(1) == 22
    assert profile.decode_step_ms(8) == 36
    assert profile.price_per_second_usd == pytest.approx(profile.price_per_hour_usd / 3600)


# ------------------------------------------------------------------------------------------ settings


def test_settings_default_to_the_g5_2xlarge_profile() -> None:
    settings = EmulatorSettings()
    assert settings.resolved_profile.name == "g5-2xlarge"
    assert not settings.fixed_timing
    assert (settings.host, settings.port, settings.model) == ("127.0.0.1", 0, "emulated-model")


def test_settings_fixed_timing_needs_all_three_values() -> None:
    assert EmulatorSettings(ttft_ms=50, itl_ms=10, output_tokens=8).fixed_timing
    with pytest.raises(ValidationError, match="all of ttft_ms"):
        EmulatorSettings(ttft_ms=50, itl_ms=10)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"profile": "nope"},
        {"error_500_rate": 1.5},
        {"hang_rate": -0.1},
        {"error_429_rate": 0.6, "cut_stream_rate": 0.6},
        {"unexpected": 1},
        {"port": 70000},
    ],
)
def test_settings_reject_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EmulatorSettings(**kwargs)


def test_cli_options_set_every_settings_field() -> None:
    argv = [
        "--host", "::1", "--port", "0", "--model", "m", "--profile", "g5-xlarge",
        "--ttft-ms", "12.5", "--itl-ms", "3", "--output-tokens", "7",
        "--error-500-rate", "0.1", "--error-429-rate", "0.2", "--hang-rate", "0.05",
        "--cut-stream-rate", "0.15", "--malformed-event-rate", "0.125",
        "--sagemaker-format", "tgi", "--seed", "42",
    ]  # fmt: skip
    parsed = settings_from_args(build_parser().parse_args(argv))
    assert parsed == EmulatorSettings(
        host="::1",
        port=0,
        model="m",
        profile="g5-xlarge",
        ttft_ms=12.5,
        itl_ms=3,
        output_tokens=7,
        error_500_rate=0.1,
        error_429_rate=0.2,
        hang_rate=0.05,
        cut_stream_rate=0.15,
        malformed_event_rate=0.125,
        sagemaker_format="tgi",
        seed=42,
    )
    # Each field is one option, so a knob added to the settings is on the command line at once.
    assert set(EmulatorSettings.model_fields) <= set(vars(build_parser().parse_args([])))


def test_cli_defaults_are_the_settings_defaults_but_a_known_port() -> None:
    parsed = settings_from_args(build_parser().parse_args([]))
    assert parsed == EmulatorSettings(port=8080)


def test_the_child_process_gets_the_settings_as_one_json_document() -> None:
    settings = EmulatorSettings(
        model="m", ttft_ms=0.1 + 0.2, itl_ms=1 / 3, output_tokens=7, hang_rate=0.05, seed=42
    )
    argv = EmulatorProcess(settings).settings_argv
    assert len(argv) == 2  # the option and the document, not one flag per field
    assert settings_from_args(build_parser().parse_args(argv)) == settings


def test_cli_rejects_invalid_settings_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--hang-rate", "2"]) == 2
    assert "hang_rate" in capsys.readouterr().err


def test_cli_lists_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-profiles"]) == 0
    out = capsys.readouterr().out
    for profile in PROFILES.values():
        assert profile.name in out and profile.instance_type in out


# ------------------------------------------------------------------------------------------ protocol


def test_generated_tokens_are_one_simple_token_each() -> None:
    tokenizer = get_tokenizer("simple")
    tokens = [generated_token(i) for i in range(500)]
    assert all(tokenizer.count(token) == 1 and token.startswith(" ") for token in tokens)
    assert tokenizer.count("".join(tokens)) == 500


def test_chat_prompt_tokens_count_all_message_contents() -> None:
    body = (
        b'{"messages": [{"role": "system", "content": "Be brief."},'
        b' {"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]}],'
        b' "max_completion_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}'
    )
    parsed = parse_request("chat", body)
    assert parsed.prompt_tokens == get_tokenizer("simple").count("Be brief.\nHello, world!") == 7
    assert (parsed.max_tokens, parsed.stream, parsed.include_usage) == (5, True, True)


def test_completion_request_defaults() -> None:
    parsed = parse_request("completions", b'{"prompt": "one two three", "temperature": 0.7}')
    assert (parsed.prompt_tokens, parsed.max_tokens, parsed.stream, parsed.include_usage) == (
        3,
        None,
        False,
        False,
    )


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("chat", b"{not json"),
        ("chat", b"[1, 2]"),
        ("chat", b'{"model": "m"}'),
        ("chat", b'{"messages": []}'),
        ("chat", b'{"messages": [{"content": "no role"}]}'),
        ("chat", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}'),
        ("chat", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}'),
        ("chat", b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}'),
        ("completions", b'{"prompt": 5}'),
        ("completions", b'{"messages": [{"role": "user", "content": "x"}]}'),
    ],
)
def test_invalid_requests_are_rejected(kind: str, body: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        parse_request(kind, body)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ engine


def _profile(**overrides: float) -> EmulatorProfile:
    values: dict[str, object] = {
        "name": "test",
        "instance_type": "ml.test",
        "price_per_hour_usd": 1.0,
        "prefill_base_ms": 10.0,
        "prefill_ms_per_token": 0.1,
        "decode_base_ms": 20.0,
        "decode_ms_per_seq": 2.0,
        "max_batch": 4,
        "jitter_frac": 0.0,
    }
    values.update(overrides)
    return EmulatorProfile.model_validate(values)


class _CountingClock(VirtualClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps = 0

    async def sleep_until(self, deadline_s: float) -> None:
        self.sleeps += 1
        await super().sleep_until(deadline_s)


async def _finish(*seqs: Sequence) -> None:
    for seq in seqs:
        while not seq.finished and not seq.aborted:
            await seq.wait_for_tokens(seq.emitted_tokens)


def _ms(times_s: list[float]) -> list[float]:
    return [round(t * 1000, 6) for t in times_s]


async def test_single_sequence_schedule_is_prefill_then_decode_steps() -> None:
    clock = VirtualClock()
    engine = BatchEngine(_profile(), clock=clock)
    engine.start()
    try:
        seq = engine.submit(prompt_tokens=100, max_tokens=4)
        await _finish(seq)
    finally:
        await engine.stop()
    # prefill 10 + 0.1*100 = 20 ms yields token 1; then decode steps of 20 + 2*1 = 22 ms.
    assert _ms(seq.token_times_s) == [20, 42, 64, 86]


async def test_decode_steps_slow_down_with_the_batch_and_prefill_stalls_everyone() -> None:
    clock = VirtualClock()
    engine = BatchEngine(_profile(), clock=clock)
    engine.start()
    try:
        first = engine.submit(prompt_tokens=100, max_tokens=3)
        second = engine.submit(prompt_tokens=300, max_tokens=3)
        await _finish(first, second)
    finally:
        await engine.stop()
    # One prefill over 400 tokens (10 + 40 = 50 ms), then decode steps of 20 + 2*2 = 24 ms.
    assert _ms(first.token_times_s) == [50, 74, 98]
    assert _ms(second.token_times_s) == [50, 74, 98]


async def test_requests_beyond_max_batch_queue_until_a_slot_frees() -> None:
    clock = VirtualClock()
    engine = BatchEngine(_profile(max_batch=4), clock=clock)
    engine.start()
    try:
        seqs = [engine.submit(prompt_tokens=100, max_tokens=3) for _ in range(5)]
        await asyncio.sleep(0)
        assert (engine.running_count + engine.waiting_count, engine.waiting_count) == (5, 1)
        await _finish(*seqs)
    finally:
        await engine.stop()
    # Four admitted together: prefill 10 + 40 = 50 ms, decode steps 20 + 2*4 = 28 ms.
    for seq in seqs[:4]:
        assert _ms(seq.token_times_s) == [50, 78, 106]
    # The fifth waits for them, then prefill 10 + 10 = 20 ms and decode steps of 22 ms.
    assert _ms(seqs[4].token_times_s) == [126, 148, 170]


async def test_cancelled_sequence_frees_its_slot() -> None:
    clock = VirtualClock()
    engine = BatchEngine(_profile(max_batch=1), clock=clock)
    engine.start()
    try:
        leaving = engine.submit(prompt_tokens=0, max_tokens=1000)
        staying = engine.submit(prompt_tokens=0, max_tokens=2)
        await leaving.wait_for_tokens(1)
        assert engine.waiting_count == 1
        engine.cancel(leaving)
        assert leaving.aborted and engine.running_count == 0
        await _finish(staying)
    finally:
        await engine.stop()
    assert leaving.emitted_tokens < 1000
    assert staying.finished and staying.token_times_s[0] > leaving.token_times_s[-1]


async def test_idle_engine_waits_without_spinning() -> None:
    clock = _CountingClock()
    engine = BatchEngine(_profile(), clock=clock)
    engine.start()
    try:
        await _finish(engine.submit(prompt_tokens=10, max_tokens=2))
        sleeps, now_s = clock.sleeps, clock.now_s()
        for _ in range(100):
            await asyncio.sleep(0)
        assert (clock.sleeps, clock.now_s()) == (sleeps, now_s)
        assert engine.running_count == engine.waiting_count == 0
        # It wakes up again for new work.
        await _finish(engine.submit(prompt_tokens=10, max_tokens=1))
        assert clock.sleeps == sleeps + 1
    finally:
        await engine.stop()


async def test_jitter_is_seeded_and_bounded() -> None:
    async def schedule(seed: int) -> list[float]:
        engine = BatchEngine(_profile(jitter_frac=0.9), seed=seed, clock=VirtualClock())
        engine.start()
        try:
            seq = engine.submit(prompt_tokens=100, max_tokens=50)
            await _finish(seq)
        finally:
            await engine.stop()
        return seq.token_times_s

    times_s = await schedule(1)
    assert times_s == await schedule(1)
    assert times_s != await schedule(2)
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(times_s)]
    assert min(gaps_ms) >= 0.5 * 22 - 1e-9
    assert len(set(round(gap, 6) for gap in gaps_ms)) > 1


async def test_stopped_engine_aborts_waiting_sequences() -> None:
    engine = BatchEngine(_profile(max_batch=1), clock=VirtualClock())
    engine.start()
    seq = engine.submit(prompt_tokens=0, max_tokens=10**6)
    await seq.wait_for_tokens(0)
    await engine.stop()
    assert seq.aborted
    assert await seq.wait_for_tokens(seq.emitted_tokens) == seq.emitted_tokens


def test_fixed_timing_schedule() -> None:
    assert _ms(fixed_token_times_s(1.0, ttft_ms=50, itl_ms=10, output_tokens=4)) == [1050, 1060, 1070, 1080]


@pytest.mark.parametrize("kind", ["chat", "completions"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_templated_token_chunks_are_the_fully_encoded_ones_byte_for_byte(
    kind: str, include_usage: bool
) -> None:
    parsed = ParsedRequest(
        kind=kind,  # type: ignore[arg-type]
        model="m",
        prompt_tokens=3,
        max_tokens=400,
        stream=True,
        include_usage=include_usage,
    )
    writer = ResponseWriter(parsed, 'model "with" quotes')
    assert [writer.token_chunk(i) for i in range(400)] == [writer.token_chunk_encoded(i) for i in range(400)]
