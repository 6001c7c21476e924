"""A disk that fills during a local run: a clear error naming what was not written, whole parts, no
temporary files, a 'partial' outcome, and a report once space is freed.

The disk is a pyarrow filesystem over the real folder that answers ENOSPC once a budget of bytes is
spent (a size-limited tmpfs needs a mount this test may not make). Parquet parts and whole-object
writes go through it, as they go through ``fmbench.storage`` in a real run; the report's files are
written by the renderer with plain file calls, so a full disk is injected there too.
"""

from __future__ import annotations

import errno
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pyarrow import fs as pafs

import report.render
from fmbench import cli, storage
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.settings import EmulatorSettings

TIMING = {"ttft_ms": 2, "itl_ms": 1, "output_tokens": 4}


class Disk:
    """How many bytes are still free; a file that is deleted gives its bytes back. ``fills_at``: the
    file whose first write finds the disk (nearly) full, as another writer on the machine took the room."""

    def __init__(self, free_bytes: int, fills_at: str | None = None) -> None:
        self.free_bytes = free_bytes
        self.fills_at = fills_at
        self.sizes: dict[str, int] = {}
        self.full_errors = 0

    def take(self, path: str, count: int) -> None:
        if self.fills_at is not None and self.fills_at in path:
            self.fills_at = None
            self.free_bytes = 256  # the part's first bytes fit, the rest does not
        if count > self.free_bytes:
            self.full_errors += 1
            raise OSError(errno.ENOSPC, "No space left on device", path)
        self.free_bytes -= count
        self.sizes[path] = self.sizes.get(path, 0) + count


class _Counted(io.RawIOBase):
    def __init__(self, disk: Disk, path: str) -> None:
        self.disk = disk
        self.path = path
        self.file = Path(path).open("wb")  # noqa: SIM115 - closed with this stream

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.disk.take(self.path, len(view))
        return self.file.write(view)

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
        super().close()


class LimitedDisk(pafs.FileSystemHandler):
    """The local filesystem, with writes counted against a ``Disk``."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        self.local = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)

    def get_type_name(self) -> str:
        return "limited-local"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: str | list[str]) -> list[pafs.FileInfo]:
        return self.local.get_file_info([paths] if isinstance(paths, str) else paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("not here")

    def delete_file(self, path: str) -> None:
        self.local.delete_file(path)
        self.disk.free_bytes += self.disk.sizes.pop(path, 0)

    def move(self, src: str, dest: str) -> None:
        self.local.move(src, dest)
        if src in self.disk.sizes:
            self.disk.free_bytes += self.disk.sizes.pop(dest, 0)  # the file it replaced
            self.disk.sizes[dest] = self.disk.sizes.pop(src)

    def copy_file(self, src: str, dest: str) -> None:
        self.local.copy_file(src, dest)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.local.open_input_stream(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.local.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        return pa.PythonFile(_Counted(self.disk, path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        raise OSError("not here")


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    """Every local storage path of the run on a disk that is full once its budget is spent; the report's
    own files (written by the renderer, not by fmbench.storage) fail too while it is full."""
    the_disk = Disk(free_bytes=0)
    handler = LimitedDisk(the_disk)
    resolve = storage.resolve_filesystem

    def limited(uri: str) -> tuple[pafs.FileSystem, str]:
        filesystem, path = resolve(uri)
        if isinstance(filesystem, pafs.LocalFileSystem):
            return pafs.PyFileSystem(handler), path
        return filesystem, path

    generate = report.render.generate_report

    def generate_unless_full(*args: Any, **kwargs: Any) -> Any:
        if the_disk.free_bytes < 1_000_000:
            folder = str(kwargs.get("report_dir", args[3] if len(args) > 3 else "the report folder"))
            raise OSError(errno.ENOSPC, "No space left on device", folder)
        return generate(*args, **kwargs)

    monkeypatch.setattr(storage, "resolve_filesystem", limited)
    monkeypatch.setattr(report.render, "generate_report", generate_unless_full)
    yield the_disk


def test_a_disk_that_fills_mid_run_keeps_every_closed_part_and_the_report_follows_once_freed(
    tmp_path: Path, disk: Disk, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with EmulatorProcess(EmulatorSettings(port=0, model="m", **TIMING)) as emulator:
        suite = {
            "name": "full",
            "targets": [
                {"name": "e", "platform": "openai", "endpoint_url": f"{emulator.url}/v1", "model": "m"}
            ],
            "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}], "inference": {"max_new_tokens": 4}},
            "load": {
                "concurrency": [1, 2, 3],
                "requests_per_level": 20,
                "client_check": {
                    "max_schedule_lag_p99_s": 60,
                    "max_runner_cpu_fraction": 64,
                    "max_loop_lag_p99_s": 60,
                },
            },
            "slo": {"p95_latency_s": 5},
        }
        path = tmp_path / "suite.yaml"
        path.write_text(yaml.safe_dump(suite))
        # The second part (the second load point's) fills the disk while it is written.
        disk.free_bytes = 10**9
        disk.fills_at = "part-00001.parquet"
        status = cli.main(["run", str(path), "--out", str(out), "--run-id", "full"])
    captured = capsys.readouterr()
    assert status == 1, captured.out + captured.err
    assert "Traceback" not in captured.err
    assert disk.full_errors >= 1
    records = out / "records" / "run_id=full"
    (branch_dir,) = records.iterdir()
    parts = sorted(branch_dir.glob("*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet"]
    kept = pq.read_table(parts[0]).num_rows  # whole and readable
    assert kept == 20
    assert not list(out.rglob("*.tmp-*"))
    outcome = json.loads((out / "outcomes" / "run_id=full" / branch_dir.name / "outcome.json").read_text())
    assert outcome["status"] == "partial"
    assert outcome["records_written"] == kept
    # the sweep stops at the part it could not write: its requests are attempted, not written
    assert outcome["requests_attempted"] == 40
    reason = outcome["reason"]
    assert reason.startswith(f"storage error: cannot write {branch_dir}/part-00001.parquet")
    assert "No space left on device" in reason and "record(s) of that part not written" in reason
    assert str(branch_dir / "part-00001.parquet") in captured.err
    assert "the report could not be written" in captured.err and "fmbench report full --root" in captured.out

    disk.free_bytes = 10**9  # space freed: the report of what was kept
    assert cli.main(["report", "full", "--root", str(out)]) == 0
    (branch,) = json.loads((out / "result.json").read_text())["branches"]
    assert branch["status"] == "partial"
    assert branch["records_written"] == kept
    assert [p["concurrency"] for p in branch["load_points"]] == [1]


def test_a_part_that_cannot_be_written_leaves_no_temporary_file(tmp_path: Path, disk: Disk) -> None:
    from fmbench.records import RecordsNotWrittenError, RecordWriter

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from record_factory import make_record  # type: ignore[import-not-found]

    disk.free_bytes = 10**9
    writer = RecordWriter(str(tmp_path), "r", "b")
    writer.extend([make_record() for _ in range(5)])
    first = writer.flush()
    disk.free_bytes = 100
    writer.extend([make_record() for _ in range(7)])
    with pytest.raises(RecordsNotWrittenError) as raised:
        writer.flush()
    assert raised.value.records == 7 and raised.value.records_written == 5
    assert "part-00001.parquet" in str(raised.value) and "No space left on device" in str(raised.value)
    assert [p.name for p in Path(first or "").parent.iterdir()] == ["part-00000.parquet"]
    assert pq.read_table(first).num_rows == 5
