"""The storage layout: every path of a run under a results root (a local folder or ``s3://bucket/prefix``).

The layout is a contract (docs/architecture.md, "Records and the storage layout"): Athena's partition
projection, the IAM grants of the stack (``infra/storage.py`` takes its key prefixes from here), the local
run's folder and a later report all rely on it, so it is spelled once. Pure string building, no I/O: a
root is joined with ``/`` whether it is a folder or an S3 URI, and nothing is resolved (the caller makes a
local root absolute when it must).

Folders, each partitioned Hive-style by ``run_id=`` (and ``branch_id=``) so that Athena and DuckDB read the
partition values back as columns::

    records/run_id=R/branch_id=B/part-NNNNN.parquet    request records (one row per request)
    specs/run_id=R/plan.json                           the whole plan (suite, branch specs, estimate)
    specs/run_id=R/branch_id=B.json                    one branch's spec, what its runner reads
    outcomes/run_id=R/branch_id=B/outcome.json         the runner's account of its branch
    outcomes/run_id=R/branch_id=B/deployment.json      when the branch's endpoint came into service
    outcomes/run_id=R/branch_id=B/teardown.json        when Teardown deleted it
    outcomes/run_id=R/branch_id=B/failure.json         the whole error that ended a failed branch
    outcomes/run_id=R/branch_results.json              the workflow's Map results, for a re-render
    outcomes/run_id=R/evaluation.json                  how the latest judging of the run ended
    reports/run_id=R/                                  the report's files
    datasets/run_id=R/                                 materialized prompts of the run
    evaluations/run_id=R/branch_id=B/part-NNNNN.parquet judgments of a branch's answers
    server_metrics/run_id=R/branch_id=B/               the endpoint's own metrics during the sweep:
        part-NNNNN.parquet                             scraped from /metrics, one part per load point
        cloudwatch.parquet                             SageMaker's or Bedrock's CloudWatch figures
    runs/run_id=R.parquet                              the runs table: one file, one row per run
    athena-results/                                    Athena's query output (cloud only)
"""

from __future__ import annotations

from typing import Final

RECORDS: Final = "records"
SPECS: Final = "specs"
OUTCOMES: Final = "outcomes"
REPORTS: Final = "reports"
DATASETS: Final = "datasets"
EVALUATIONS: Final = "evaluations"
SERVER_METRICS: Final = "server_metrics"
RUNS: Final = "runs"
ATHENA_RESULTS: Final = "athena-results"

# Partition keys in path order: run_id=<run>/branch_id=<branch>.
RUN_KEY: Final = "run_id"
BRANCH_KEY: Final = "branch_id"
PARTITION_KEYS: Final = (RUN_KEY, BRANCH_KEY)

PART_PREFIX: Final = "part-"
PART_SUFFIX: Final = ".parquet"
_PART_DIGITS: Final = 5


def key_prefix(folder: str) -> str:
    """``records/``: a top folder as an S3 key prefix (IAM grants, lifecycle rules, table locations)."""
    return f"{folder}/"


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def run_folder(root: str, folder: str, run_id: str) -> str:
    """``<root>/<folder>/run_id=<run>``: one run's partition of a top folder."""
    return _join(root, folder, f"{RUN_KEY}={run_id}")


def branch_folder(root: str, folder: str, run_id: str, branch_id: str) -> str:
    """``<root>/<folder>/run_id=<run>/branch_id=<branch>``: one branch's partition of a top folder."""
    return _join(run_folder(root, folder, run_id), f"{BRANCH_KEY}={branch_id}")


# ------------------------------------------------------------------------------------------ records


def records_prefix(root: str, run_id: str, branch_id: str) -> str:
    """The folder a branch's runner writes its Parquet parts into."""
    return branch_folder(root, RECORDS, run_id, branch_id)


def run_records_prefix(root: str, run_id: str) -> str:
    """Every branch's records of a run, with a trailing ``/`` (what result.json shows and Athena reads)."""
    return run_folder(root, RECORDS, run_id) + "/"


def part_name(number: int) -> str:
    """``part-00003.parquet``: numbered so that a retried runner adds parts beside its predecessor's."""
    return f"{PART_PREFIX}{number:0{_PART_DIGITS}d}{PART_SUFFIX}"


def part_number(name: str) -> int | None:
    """The number of a part file's name, None for any other file."""
    digits = name[len(PART_PREFIX) : len(PART_PREFIX) + _PART_DIGITS]
    if name.startswith(PART_PREFIX) and digits.isdigit():
        return int(digits)
    return None


# ------------------------------------------------------------------------------------ specs, outcomes


def run_plan_uri(root: str, run_id: str) -> str:
    """The whole plan (suite, every branch spec, the estimate): what a later report of the run starts from."""
    return _join(run_folder(root, SPECS, run_id), "plan.json")


def branch_spec_uri(root: str, run_id: str, branch_id: str) -> str:
    """One branch's spec, what the cloud runner reads (FMBENCH_BRANCH_SPEC_URI)."""
    return _join(run_folder(root, SPECS, run_id), f"{BRANCH_KEY}={branch_id}.json")


def outcome_uri(root: str, run_id: str, branch_id: str) -> str:
    """Where a runner leaves its BranchOutcome, so a later step (report, state machine) can read it."""
    return _join(branch_folder(root, OUTCOMES, run_id, branch_id), "outcome.json")


def deployment_record_uri(root: str, run_id: str, branch_id: str) -> str:
    """Beside the runner's outcome.json: how long the branch's endpoint took to come into service."""
    return _join(branch_folder(root, OUTCOMES, run_id, branch_id), "deployment.json")


def teardown_record_uri(root: str, run_id: str, branch_id: str) -> str:
    """Beside deployment.json: when Teardown deleted the endpoint, for the run's actual cost."""
    return _join(branch_folder(root, OUTCOMES, run_id, branch_id), "teardown.json")


def failure_record_uri(root: str, run_id: str, branch_id: str) -> str:
    """The whole error of a branch that failed in the workflow; the Map's result carries it cut short."""
    return _join(branch_folder(root, OUTCOMES, run_id, branch_id), "failure.json")


def branch_results_uri(root: str, run_id: str) -> str:
    """The Map's results as Render received them, so a report-only re-render keeps each branch's reason."""
    return _join(run_folder(root, OUTCOMES, run_id), "branch_results.json")


def evaluation_outcome_uri(root: str, run_id: str) -> str:
    """How the latest judging of the run ended (judged, or failed and why), for the report and a re-render."""
    return _join(run_folder(root, OUTCOMES, run_id), "evaluation.json")


# ------------------------------------------------------------------------- reports and later folders


def reports_prefix(root: str, run_id: str) -> str:
    """The folder a cloud run's report is published to, with a trailing ``/``."""
    return run_folder(root, REPORTS, run_id) + "/"


def datasets_prefix(root: str, run_id: str) -> str:
    """The prompts a run materialized, so that a later run or an evaluation reads the very same ones."""
    return run_folder(root, DATASETS, run_id) + "/"


def evaluations_prefix(root: str, run_id: str) -> str:
    """Judgments of a run's responses, kept apart from the records they judge."""
    return run_folder(root, EVALUATIONS, run_id) + "/"


def evaluation_part_prefix(root: str, run_id: str, branch_id: str) -> str:
    """One candidate's judgments (``fmbench.judgments``), partitioned like the records they judge."""
    return branch_folder(root, EVALUATIONS, run_id, branch_id) + "/"


def server_metrics_prefix(root: str, run_id: str, branch_id: str) -> str:
    """What the endpoint itself reported during a branch's sweep, partitioned like the records."""
    return branch_folder(root, SERVER_METRICS, run_id, branch_id) + "/"


def server_metrics_cloudwatch_uri(root: str, run_id: str, branch_id: str) -> str:
    """A branch's CloudWatch figures, one file replaced at every render (they arrive minutes late)."""
    return server_metrics_prefix(root, run_id, branch_id) + "cloudwatch" + PART_SUFFIX


def runs_table_prefix(root: str) -> str:
    """The table with one row per run: no run partition, every run is a row of the same table."""
    return _join(root, RUNS) + "/"


def run_row_uri(root: str, run_id: str) -> str:
    """``runs/run_id=<run>.parquet``: one file per run, so concurrent runs never write the same object."""
    return f"{runs_table_prefix(root)}{RUN_KEY}={run_id}{PART_SUFFIX}"
