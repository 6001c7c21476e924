"""The report's SQL: loading the Athena (Trino) text, binding parameters, running it locally on DuckDB."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import sqlglot
from sqlglot import exp

from fmbench import layout
from fmbench.endpoints.base import ERROR_CLASSES

# Measured errors of each class of the vocabulary (fmbench.endpoints.base), one column each.
ERROR_CLASS_COLUMNS: tuple[str, ...] = tuple(f"errors_{name}" for name in ERROR_CLASSES)
# Column order of compute_metrics (and of summary.parquet); metrics.sql produces exactly these.
METRIC_COLUMNS: tuple[str, ...] = (
    "run_id",
    "branch_id",
    "target_name",
    "platform",
    "model",
    "container",
    "instance_type",
    "instance_count",
    "instance_price_per_hour_usd",
    "load_mode",
    "concurrency",
    "request_rate_per_s",
    "payload_bin",
    "requests",
    "successes",
    "errors",
    "error_rate",
    "window_s",
    "latency_mean_s",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p95_s",
    "latency_p99_s",
    "ttft_p50_s",
    "ttft_p95_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p95_s",
    "itl_p50_s",
    "itl_p95_s",
    "itl_p99_s",
    "latency_from_schedule_p50_s",
    "latency_from_schedule_p95_s",
    "latency_from_schedule_p99_s",
    "ttft_from_schedule_p95_s",
    "prompt_tokens_mean",
    "completion_tokens_mean",
    "prompt_tokens_local_diff_pct",
    "completion_tokens_local_diff_pct",
    "prompt_token_throughput_per_s",
    "completion_token_throughput_per_s",
    "transactions_per_minute",
    "price_per_txn_usd",
    "price_per_1m_output_tokens_usd",
    "schedule_lag_p50_s",
    "schedule_lag_p99_s",
    "runner_cpu_fraction",
    "client_bound",
    "time_to_first_answer_p50_s",
    "time_to_first_answer_p95_s",
    "time_to_first_answer_p99_s",
    "reasoning_tokens_mean",
    *ERROR_CLASS_COLUMNS,
    "requests_reused_prompt",
    "requests_local_token_counts",
    "goodput_share",
    "goodput_per_s",
)
# The per-request SLOs metrics.sql takes (fmbench.config.Slo): goodput counts requests within every one set.
REQUEST_SLO_FIELDS: tuple[str, ...] = ("request_ttft_s", "request_tpot_s", "request_latency_s")
# Columns of ttft_samples.sql: points of each branch's TTFT empirical CDF (at most ~1,000 per branch).
TTFT_SAMPLE_COLUMNS: tuple[str, ...] = (
    "branch_id",
    "target_name",
    "ttft_s",
    "cumulative_share",
    "sample_count",
)
# Columns of request_samples.sql: every measured request, for the comparison of two runs (report/compare.py).
REQUEST_SAMPLE_COLUMNS: tuple[str, ...] = (
    "target_name",
    "load_mode",
    "concurrency",
    "request_rate_per_s",
    "payload_bin",
    "is_success",
    "latency_s",
    "ttft_s",
    "send_epoch_s",
    "end_epoch_s",
)
# Columns of accuracy.sql: one row per figure set (``figure``), docs/metrics.md "Accuracy".
ACCURACY_COLUMNS: tuple[str, ...] = (
    "figure",
    "branch_id",
    "target_name",
    "payload_bin",
    "judge",
    "other_judge",
    "judge_model",
    "prompts",
    "majority_correct",
    "majority_incorrect",
    "no_majority",
    "accuracy",
    "verdicts",
    "correct",
    "incorrect",
    "unparsed",
    "error_verdicts",
    "share_correct",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "verdicts_without_cost",
    "both_correct",
    "first_only_correct",
    "second_only_correct",
    "both_incorrect",
    "rated_items",
    "agreement_sum",
    "answer_source",
)
# The table of judgment rows (fmbench/judgments.py) the accuracy query reads: a DuckDB view locally, the
# Glue table over evaluations/ in the cloud.
JUDGMENTS_TABLE = "judgments"
SORT_COLUMNS = ["target_name", "payload_bin", "concurrency", "request_rate_per_s", "branch_id"]

_SQL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
ParameterValue = str | int | float


class QueryError(ValueError):
    """A report query that cannot be prepared: unknown file, unbound or unexpected parameter."""


def load_sql(name: str) -> str:
    """The Trino text of ``report/sql/<name>.sql``, read from the installed package."""
    if not _SQL_NAME.match(name):
        raise QueryError(f"not a query name: {name!r}")
    resource = resources.files("report").joinpath("sql", f"{name}.sql")
    if not resource.is_file():
        raise QueryError(f"no query named {name!r} in report/sql")
    return resource.read_text(encoding="utf-8")


def request_slo_parameters(slo: Any = None) -> dict[str, float | None]:
    """metrics.sql's per-request SLO parameters from a suite's ``slo`` (None: none set, no goodput)."""
    return {name: getattr(slo, name, None) for name in REQUEST_SLO_FIELDS}


def _bound_tree(sql: str, **params: ParameterValue | None) -> exp.Expr:
    tree = sqlglot.parse_one(sql, read="trino")
    wanted = {p.name for p in tree.find_all(exp.Placeholder)}
    if missing := sorted(wanted - params.keys()):
        raise QueryError(f"unbound parameter(s): {', '.join(missing)}")
    if unused := sorted(params.keys() - wanted):
        raise QueryError(f"parameter(s) not in the query: {', '.join(unused)}")
    values = {name: exp.null() if value is None else value for name, value in params.items()}
    return exp.replace_placeholders(tree, **values)


def bind_parameters(sql: str, dialect: str, **params: ParameterValue | None) -> str:
    """The Trino ``sql`` with every ``:name`` placeholder replaced by a literal, written in ``dialect``.

    Values become SQL literals through sqlglot (strings are quoted and escaped), never by string
    formatting, so a run id cannot change the query; None becomes NULL. Every placeholder must be bound and
    every parameter used: a typo would otherwise silently compare against NULL or be ignored.
    """
    return _bound_tree(sql, **params).sql(dialect=dialect, pretty=True)


def to_duckdb(sql: str, **params: ParameterValue | None) -> str:
    """The Trino ``sql`` transpiled to DuckDB with its parameters bound, and its exact percentiles computed
    by DuckDB's own exact aggregate (``duckdb_exact_percentiles``)."""
    return duckdb_exact_percentiles(_bound_tree(sql, **params)).sql(dialect="duckdb", pretty=True)


# The window CTEs of metrics.sql's portable exact percentiles: samples -> ranked -> bracketing -> percentiles.
_PERCENTILE_CTES = ("ranked", "bracketing")


def duckdb_exact_percentiles(tree: exp.Expr) -> exp.Expr:
    """``tree`` with its ``percentiles`` CTE computed by DuckDB's ``quantile_cont``, where it has one.

    Trino has no exact percentile aggregate, so metrics.sql ranks every sample with window functions and
    interpolates between the two around rank (n - 1) x q (Hyndman-Fan type 7). DuckDB's ``quantile_cont``
    is the same definition, exact, and far cheaper: it selects within each group instead of sorting every
    sample of the run by its group and value. The CTE ``percentiles`` (columns: the group's keys,
    ``quantile_name``, ``quantile_value``, over ``samples(..., sample_value)`` at the ``quantiles`` rows) is
    rewritten on the syntax tree and the window CTEs it replaces are dropped; Athena runs the text as
    written. The numpy tests (tests/unit/test_metrics_sql.py) check the rewritten form.
    """
    ctes = {cte.alias: cte for cte in tree.find_all(exp.CTE)}
    percentiles, quantiles = ctes.get("percentiles"), ctes.get("quantiles")
    if percentiles is None or quantiles is None:
        return tree
    rows = [row.expressions for row in quantiles.this.find_all(exp.Tuple)]
    names = [row[0] for row in rows]
    values = [row[1] for row in rows]
    select = percentiles.this
    keys = [
        column.alias_or_name
        for column in select.selects
        if column.alias_or_name not in {"quantile_name", "quantile_value"}
    ]
    key_list = ", ".join(keys)
    body = sqlglot.parse_one(
        f"SELECT {key_list}, unnest([{', '.join(n.sql('duckdb') for n in names)}]) AS quantile_name, "
        f"unnest(quantile_cont(sample_value, [{', '.join(v.sql('duckdb') for v in values)}])) "
        f"AS quantile_value FROM samples GROUP BY {key_list}",
        read="duckdb",
    )
    percentiles.set("this", body)
    for name in _PERCENTILE_CTES:
        if name in ctes:
            ctes[name].pop()
    return _select_list_unnest(tree)


def _select_list_unnest(tree: exp.Expr) -> exp.Expr:
    """Every ``FROM t AS m CROSS JOIN UNNEST(m.list) AS u (v)`` as ``FROM (SELECT m.*, unnest(m.list) AS v
    FROM t AS m) AS u``: the same rows. DuckDB plans the lateral join as a join of every row with its own
    list; the select-list form unnests in one pass (ITL gaps: one row per token of every request)."""
    for select in list(tree.find_all(exp.Select)):
        joins = select.args.get("joins") or []
        source = select.args.get("from_") or select.args.get("from")
        if len(joins) != 1 or not isinstance(joins[0].this, exp.Unnest) or source is None:
            continue
        unnest = joins[0].this
        alias = unnest.args.get("alias")
        table = source.this
        if alias is None or len(alias.columns) != 1 or len(unnest.expressions) != 1:
            continue
        outer, inner_alias = alias.name, table.alias_or_name
        value = alias.columns[0].name
        inner = exp.select(
            exp.Star() if not table.alias else exp.column(exp.Star(), table=inner_alias)
        ).from_(table.copy())
        inner = inner.select(exp.alias_(exp.Explode(this=unnest.expressions[0].copy()), value))
        for column in select.find_all(exp.Column):
            if column.table in {outer, inner_alias}:
                column.set("table", exp.to_identifier(outer))
        select.set("joins", None)
        select.from_(inner.subquery(outer), copy=False)
    return tree


def run_records_glob(storage_root: str, run_id: str) -> str:
    """Where the run's Parquet parts are: one folder per branch under the run's Hive partition."""
    root = Path(storage_root).resolve()
    return str(Path(layout.run_folder(str(root), layout.RECORDS, run_id)) / "*" / "*.parquet")


def _has_records(storage_root: str, run_id: str) -> bool:
    run_folder = Path(layout.run_folder(str(Path(storage_root).resolve()), layout.RECORDS, run_id))
    return any(run_folder.glob("*/*.parquet"))


def _query_records(
    storage_root: str, run_id: str, query_name: str, **params: ParameterValue | None
) -> pd.DataFrame:
    return run_duckdb(storage_root, run_id, to_duckdb(load_sql(query_name), run_id=run_id, **params))


def run_duckdb(storage_root: str, run_id: str, duckdb_sql: str) -> pd.DataFrame:
    """``duckdb_sql`` run over the run's records (a view named ``records`` on its local Parquet parts)."""
    if "://" in storage_root:
        raise QueryError(f"local storage roots only (cloud runs query Athena): {storage_root}")
    glob = exp.Literal.string(run_records_glob(storage_root, run_id)).sql(dialect="duckdb")
    with duckdb.connect(":memory:") as connection:
        # Every report query orders its result itself: DuckDB need not keep the rows' order on the way,
        # which lets it stream and spill instead of buffering (a run of millions of requests).
        connection.execute("SET preserve_insertion_order = false")
        # Partition values are read as text: a numeric-looking run id must still equal the :run_id string.
        connection.execute(
            "CREATE VIEW records AS SELECT * FROM read_parquet("
            f"{glob}, hive_partitioning = true, union_by_name = true, "
            "hive_types = {'run_id': VARCHAR, 'branch_id': VARCHAR})"
        )
        return connection.execute(duckdb_sql).df()


def compute_metrics(storage_root: str, run_id: str, slo: Any = None) -> pd.DataFrame:
    """Per-load-point metrics of one run (columns ``METRIC_COLUMNS``), from a local records folder.

    ``slo`` (the suite's, ``fmbench.config.Slo``) gives the per-request SLOs of goodput; without one set,
    the goodput columns are null.
    Rows are sorted by target name, payload bin and concurrency. A run without records gives an empty
    frame with the same columns, so callers render "no data" rather than fail.
    """
    if not _has_records(storage_root, run_id):
        return _empty(METRIC_COLUMNS)
    frame = _typed(
        _query_records(storage_root, run_id, "metrics", **request_slo_parameters(slo)), METRIC_COLUMNS
    )
    return frame.sort_values(SORT_COLUMNS, kind="stable", na_position="last").reset_index(drop=True)


def ttft_samples(storage_root: str, run_id: str) -> pd.DataFrame:
    """Points of each branch's TTFT empirical CDF over its successful measured requests (columns
    ``TTFT_SAMPLE_COLUMNS``; every request of a branch of at most 1,000), for the TTFT chart."""
    if not _has_records(storage_root, run_id):
        return _empty(TTFT_SAMPLE_COLUMNS)
    return _typed(_query_records(storage_root, run_id, "ttft_samples"), TTFT_SAMPLE_COLUMNS).reset_index(
        drop=True
    )


def request_samples(storage_root: str, run_id: str) -> pd.DataFrame:
    """Every measured request of a run (columns ``REQUEST_SAMPLE_COLUMNS``): what a comparison resamples."""
    if not _has_records(storage_root, run_id):
        return _empty(REQUEST_SAMPLE_COLUMNS)
    return _typed(_query_records(storage_root, run_id, "request_samples"), REQUEST_SAMPLE_COLUMNS)


def run_judgments_glob(storage_root: str, run_id: str) -> str:
    """Where the run's judgment parts are: one folder per judged branch under the run's Hive partition."""
    root = Path(storage_root).resolve()
    return str(Path(layout.run_folder(str(root), layout.EVALUATIONS, run_id)) / "*" / "*.parquet")


def has_judgments(storage_root: str, run_id: str) -> bool:
    """Whether a local run has any Parquet part of judgments (its accuracy was judged)."""
    if "://" in storage_root:
        return False
    run_folder = Path(layout.run_folder(str(Path(storage_root).resolve()), layout.EVALUATIONS, run_id))
    return any(run_folder.glob("*/*.parquet"))


def accuracy_figures(storage_root: str, run_id: str) -> pd.DataFrame | None:
    """The run's accuracy counts (columns ``ACCURACY_COLUMNS``, accuracy.sql on DuckDB), from a local root;
    None when the run has no judgments (it was not judged), so that its report has no accuracy section."""
    if not has_judgments(storage_root, run_id):
        return None
    glob = exp.Literal.string(run_judgments_glob(storage_root, run_id)).sql(dialect="duckdb")
    with duckdb.connect(":memory:") as connection:
        source = (
            f"read_parquet({glob}, hive_partitioning = true, union_by_name = true, "
            "hive_types = {'run_id': VARCHAR, 'branch_id': VARCHAR})"
        )
        connection.execute(f"CREATE VIEW {JUDGMENTS_TABLE} AS SELECT * FROM {source}")
        _add_missing_answer_source(connection, source)
        frame = connection.execute(to_duckdb(load_sql("accuracy"), run_id=run_id)).df()
    return sort_accuracy(typed_frame(frame, ACCURACY_COLUMNS))


def _add_missing_answer_source(connection: duckdb.DuckDBPyConnection, source: str) -> None:
    """Judgments written before the ``answer_source`` column: the view gets it as NULL (Athena reads a
    column a Parquet file lacks as NULL by itself). ``source``: the view's ``read_parquet(...)``."""
    names = {row[0] for row in connection.execute(f"DESCRIBE {JUDGMENTS_TABLE}").fetchall()}
    if "answer_source" not in names:
        connection.execute(
            f"CREATE OR REPLACE VIEW {JUDGMENTS_TABLE} AS "
            f"SELECT *, CAST(NULL AS VARCHAR) AS answer_source FROM {source}"
        )


def sort_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """accuracy.sql's rows in one order whatever the engine: by figure set, candidate, bin, judge."""
    keys = ["figure", "target_name", "branch_id", "payload_bin", "judge", "other_judge"]
    return frame.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True)


def has_records(storage_root: str, run_id: str) -> bool:
    """Whether a local run has any Parquet part of records under the root."""
    return _has_records(storage_root, run_id)


_STRING_COLUMNS = frozenset(
    {"run_id", "branch_id", "target_name", "platform", "model", "container", "instance_type", "load_mode"}
    | {"payload_bin", "figure", "judge", "other_judge", "judge_model", "answer_source"}
)
# Counts of accuracy.sql that are NULL outside their figure set.
_NULLABLE_COUNT_COLUMNS = frozenset(
    {
        "prompts",
        "majority_correct",
        "majority_incorrect",
        "no_majority",
        "verdicts",
        "correct",
        "incorrect",
        "unparsed",
        "error_verdicts",
        "attempts",
        "prompt_tokens",
        "completion_tokens",
        "verdicts_without_cost",
        "both_correct",
        "first_only_correct",
        "second_only_correct",
        "both_incorrect",
        "rated_items",
    }
)
_COUNT_COLUMNS = frozenset(
    {
        "sample_count",
        "requests",
        "successes",
        "errors",
        "requests_reused_prompt",
        "requests_local_token_counts",
        *ERROR_CLASS_COLUMNS,
    }
)
_NULLABLE_INT_COLUMNS = frozenset({"instance_count", "concurrency"})
_BOOL_COLUMNS = frozenset({"client_bound", "is_success"})


def _dtype(column: str) -> str:
    """One dtype per column whatever the data, so summary.parquet has the same schema in every run."""
    if column in _COUNT_COLUMNS:
        return "int64"
    if column in _NULLABLE_INT_COLUMNS or column in _NULLABLE_COUNT_COLUMNS:
        return "Int64"
    if column in _STRING_COLUMNS:
        return "str"
    if column in _BOOL_COLUMNS:
        return "bool"
    return "float64"


def _typed(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    return frame[list(columns)].astype({name: _dtype(name) for name in columns})


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=_dtype(name)) for name in columns})


# ---------------------------------------------------------------------------------------------- Athena


def athena_query(
    query_name: str,
    run_id: str,
    branch_ids: list[str],
    table: str = "records",
    **params: ParameterValue | None,
) -> str:
    """``report/sql/<query_name>.sql`` for Athena: the run id and ``params`` bound, ``table`` (the records,
    or the judgments) restricted to ``branch_ids``.

    The Glue table projects its ``run_id`` and ``branch_id`` partitions from injected values, so Athena runs
    a query on it only when both are given as literals. The ``branch_id IN (...)`` condition is added to the
    WHERE of every SELECT that reads the records table, on the syntax tree (values become escaped string
    literals, never formatted into the text), and the result is written in the Trino dialect.
    """
    if not branch_ids:
        raise QueryError(f"an Athena query on the {table} table needs at least one branch id")
    bound = bind_parameters(load_sql(query_name), "trino", run_id=run_id, **params)
    tree = sqlglot.parse_one(bound, read="trino")
    tables = [found for found in tree.find_all(exp.Table) if found.name == table and not found.db]
    if not tables:
        raise QueryError(f"{query_name}.sql does not read the {table} table")
    for found in tables:
        select = found.find_ancestor(exp.Select)
        if select is None:
            raise QueryError(f"{query_name}.sql reads the {table} table outside a SELECT")
        condition = exp.In(
            this=exp.column("branch_id", table=found.alias_or_name),
            expressions=[exp.Literal.string(branch_id) for branch_id in branch_ids],
        )
        select.where(condition, append=True, copy=False)
    return tree.sql(dialect="trino", pretty=True)


def athena_metrics_query(run_id: str, branch_ids: list[str], slo: Any = None) -> str:
    """The metrics query (metrics.sql) of one run's branches, as the workflow's Query state runs it;
    ``slo``: the suite's, whose per-request limits make goodput (none: goodput is null)."""
    return athena_query("metrics", run_id, branch_ids, "records", **request_slo_parameters(slo))


def athena_ttft_samples_query(run_id: str, branch_ids: list[str]) -> str:
    """The TTFT samples query (ttft_samples.sql) of one run's branches, for the TTFT chart."""
    return athena_query("ttft_samples", run_id, branch_ids)


def athena_accuracy_query(run_id: str, branch_ids: list[str]) -> str:
    """The accuracy query (accuracy.sql) of one run's branches, on the Glue table of judgments."""
    return athena_query("accuracy", run_id, branch_ids, table=JUDGMENTS_TABLE)


def typed_frame(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """``columns`` of ``frame`` with the report's dtypes, whichever engine produced it (DuckDB or Athena)."""
    if frame.empty and not set(columns) <= set(frame.columns):
        return _empty(columns)
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise QueryError(f"query result lacks column(s): {', '.join(missing)}")
    return _typed(frame, columns)
