"""The storage layout: paths the runner, the local run, the cloud steps, the report and the stack share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fmbench import layout
from fmbench.records import RecordWriter
from infra import storage as infra_storage

RUN = "20260101T000000Z-abc123"
BRANCH = "emulator-1a2b3c4d"


@pytest.mark.parametrize("root", ["s3://bucket", "s3://bucket/", "s3://bucket/results", "/data/out"])
def test_every_path_of_a_run_is_partitioned_by_run_and_branch(root: str) -> None:
    base = root.rstrip("/")
    assert layout.records_prefix(root, RUN, BRANCH) == f"{base}/records/run_id={RUN}/branch_id={BRANCH}"
    assert layout.run_records_prefix(root, RUN) == f"{base}/records/run_id={RUN}/"
    assert layout.run_plan_uri(root, RUN) == f"{base}/specs/run_id={RUN}/plan.json"
    assert layout.branch_spec_uri(root, RUN, BRANCH) == f"{base}/specs/run_id={RUN}/branch_id={BRANCH}.json"
    outcomes = f"{base}/outcomes/run_id={RUN}"
    assert layout.outcome_uri(root, RUN, BRANCH) == f"{outcomes}/branch_id={BRANCH}/outcome.json"
    assert layout.deployment_record_uri(root, RUN, BRANCH) == f"{outcomes}/branch_id={BRANCH}/deployment.json"
    assert layout.teardown_record_uri(root, RUN, BRANCH) == f"{outcomes}/branch_id={BRANCH}/teardown.json"
    assert layout.branch_results_uri(root, RUN) == f"{outcomes}/branch_results.json"
    assert layout.reports_prefix(root, RUN) == f"{base}/reports/run_id={RUN}/"


def test_the_folders_of_later_features_follow_the_same_scheme() -> None:
    root = "s3://bucket/results"
    assert layout.datasets_prefix(root, RUN) == f"{root}/datasets/run_id={RUN}/"
    assert layout.evaluations_prefix(root, RUN) == f"{root}/evaluations/run_id={RUN}/"
    assert (
        layout.server_metrics_prefix(root, RUN, BRANCH)
        == f"{root}/server_metrics/run_id={RUN}/branch_id={BRANCH}/"
    )
    assert layout.runs_table_prefix(root) == f"{root}/runs/"


def test_part_names_sort_in_write_order_and_read_back_their_number() -> None:
    names = [layout.part_name(number) for number in (0, 9, 10, 12345)]
    assert names == sorted(names)
    assert names[0] == "part-00000.parquet"
    assert [layout.part_number(name) for name in names] == [0, 9, 10, 12345]
    assert layout.part_number("outcome.json") is None
    assert layout.part_number("part-abcde.parquet") is None


def test_the_record_writer_writes_where_the_layout_says(tmp_path: Path) -> None:
    writer = RecordWriter(str(tmp_path), RUN, BRANCH)
    assert writer.prefix == layout.records_prefix(str(tmp_path), RUN, BRANCH)
    (Path(writer.prefix) / layout.part_name(6)).write_bytes(b"")
    assert RecordWriter(str(tmp_path), RUN, BRANCH)._next_part == 7


def test_the_stacks_key_prefixes_are_the_layouts_top_folders() -> None:
    prefixes = {
        infra_storage.RECORDS_PREFIX: layout.RECORDS,
        infra_storage.SPECS_PREFIX: layout.SPECS,
        infra_storage.OUTCOMES_PREFIX: layout.OUTCOMES,
        infra_storage.REPORTS_PREFIX: layout.REPORTS,
        infra_storage.ATHENA_RESULTS_PREFIX: layout.ATHENA_RESULTS,
    }
    for prefix, folder in prefixes.items():
        assert prefix == f"{folder}/"


def test_the_runner_container_does_not_import_the_local_run() -> None:
    """The runner image lives its branch through fmbench.branch, not through the local run's module."""
    loaded = "print('fmbench.branch' in sys.modules, 'fmbench.local' in sys.modules)"
    code = f"import sys, fmbench.runner_main; {loaded}"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["True", "False"]
