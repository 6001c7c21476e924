"""Record writing beside a running load: paced in slices, the same table either way, pyarrow warmed first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from record_factory import make_record

from fmbench import records
from fmbench.records import PACED_SLICE, paced_slices, records_to_table


def test_unpaced_work_is_one_slice() -> None:
    items = list(range(1000))
    assert list(paced_slices(items, 0.0)) == [items]


def test_paced_work_comes_in_slices_with_a_pause_between(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(records.time, "sleep", pauses.append)
    items = list(range(2 * PACED_SLICE + 5))
    slices = list(paced_slices(items, 0.001))
    assert [len(piece) for piece in slices] == [PACED_SLICE, PACED_SLICE, 5]
    assert [x for piece in slices for x in piece] == items
    assert pauses == [0.001, 0.001]  # between slices only


def test_a_paced_table_is_the_unpaced_table() -> None:
    rows = [make_record(request_id=f"r{i}", latency_s=i / 7, itl_s=[0.01] * (i % 5)) for i in range(100)]
    paced = records_to_table(rows, pause_s=0.0001)
    assert paced.num_rows == 100
    assert paced.equals(records_to_table(rows))


def test_the_writer_warms_up_pyarrows_conversion_before_any_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records.warm_up_conversion.cache_clear()
    calls: list[list[object]] = []
    monkeypatch.setattr(records, "records_to_table", lambda rows, **_: calls.append(list(rows)))
    records.RecordWriter(str(tmp_path), "run", "branch")
    records.RecordWriter(str(tmp_path), "run", "branch-2")
    assert calls == [[]]  # once per process, on the first writer
    records.warm_up_conversion.cache_clear()


def test_the_warm_up_is_what_imports_pandas() -> None:
    # pyarrow's first conversion of Python values imports pandas (seconds of CPU): the warm-up pays it.
    code = (
        "import sys; from fmbench import records; before = 'pandas' in sys.modules; "
        "records.warm_up_conversion(); print(before, 'pandas' in sys.modules)"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    ).stdout
    assert out.split() == ["False", "True"]
