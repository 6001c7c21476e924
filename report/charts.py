"""The report's charts: PNGs drawn with matplotlib's Agg backend from the view model's load points."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use("Agg"): no display backend is ever loaded
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from report.query import METRIC_COLUMNS, SORT_COLUMNS, typed_frame

if TYPE_CHECKING:
    from report.accuracy import AccuracyView
    from report.view import ReportView

DPI = 110


@dataclass(frozen=True, slots=True)
class ChartSpec:
    name: str
    title: str
    caption: str


# Report order. Captions are one line each; the headline bin and cost scale are filled in at render time.
CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec(
        "price_performance",
        "Price vs performance",
        "p95 latency against cost per {cost:,} transactions on bin {bin}, one mark per branch and load "
        "level; larger marks serve more transactions per minute; lower-left is better.",
    ),
    ChartSpec(
        "latency_vs_prompt_tokens",
        "Latency vs prompt length",
        "p95 (solid) and mean (dotted) end-to-end latency against the mean prompt tokens of each bin, "
        "one line per concurrency level, one panel per branch.",
    ),
    ChartSpec(
        "throughput_vs_concurrency",
        "Throughput vs concurrency",
        "Transactions per minute and completion tokens per second against concurrency on bin {bin}, "
        "one line per branch: where a line flattens, more concurrency no longer buys throughput.",
    ),
    ChartSpec(
        "ttft_distribution",
        "TTFT distribution",
        "Empirical CDF of time to first token per branch, successful streamed requests of all load points.",
    ),
    ChartSpec(
        "throughput_vs_rate",
        "Throughput vs offered rate",
        "Open loop, bin {bin}: successful requests per second achieved against the rate offered (dashed: "
        "achieved = offered), and p95 latency from the scheduled time; hollow marks are client-bound.",
    ),
    ChartSpec(
        "error_rate_vs_concurrency",
        "Error rate vs concurrency",
        "Share of measured requests that failed against concurrency on bin {bin}, one line per branch.",
    ),
    ChartSpec(
        "errors_by_class",
        "Errors by class",
        "Failed measured requests of each branch, all load points, stacked by error class.",
    ),
    ChartSpec(
        "majority_accuracy",
        "Majority-vote accuracy",
        "Share of each candidate's judged prompts whose judges' majority said correct, with its 95% Wilson "
        "interval; prompts without a majority count against it. Dashed: the SLO's accuracy floor.",
    ),
    ChartSpec(
        "accuracy_vs_prompt_length",
        "Accuracy vs prompt length",
        "Majority-vote accuracy of each candidate per prompt-length bin (bins in the suite's order), with "
        "95% Wilson intervals; a bin of few judged prompts has a wide interval.",
    ),
    ChartSpec(
        "server_utilization",
        "Server utilization over the run",
        "What each endpoint reported over the run: requests running and waiting (scraped /metrics), and "
        "KV-cache usage, GPU and CPU utilization in percent (/metrics, CloudWatch one-minute averages).",
    ),
)
_PALETTE = matplotlib.colormaps["tab10"]
_PALETTE_SIZE = 10


@contextmanager
def _figure(
    path: Path, width_in: float = 8.0, height_in: float = 5.0, **subplots: Any
) -> Iterator[tuple[Figure, Any]]:
    """A figure that is saved to ``path`` and always closed, even when drawing fails half-way."""
    figure, axes = plt.subplots(figsize=(width_in, height_in), **subplots)
    try:
        yield figure, axes
        figure.tight_layout()
        figure.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(figure)


def _branch_colors(names: list[str]) -> dict[str, Any]:
    return {name: _color(index) for index, name in enumerate(names)}


def _color(index: int) -> Any:
    return _PALETTE(index % _PALETTE_SIZE)


def _load_label(row: Any) -> str:
    """'c=4' or '2.5/s', with a dagger when the load point was client-bound (as in the report's tables)."""
    concurrency = row.concurrency
    label = f"c={int(concurrency)}" if concurrency is not None and not pd.isna(concurrency) else None
    label = label or f"{row.request_rate_per_s:g}/s"
    return label + (" †" if _bound(row) else "")


def _bound(row: Any) -> bool:
    value = getattr(row, "client_bound", False)
    return bool(value) if value is not None and not pd.isna(value) else False


def _concurrency_axis(axes: Any, levels: list[int]) -> None:
    """Ticks at the measured levels; a doubling sweep (1, 2, 4, ... 64) reads best on a log2 axis."""
    if len(levels) >= 3 and levels[0] > 0 and levels[-1] / levels[0] >= 8:
        axes.set_xscale("log", base=2)
    axes.set_xticks(levels)
    axes.set_xticklabels([str(level) for level in levels])
    axes.minorticks_off()


def _finite(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    finite: pd.Series = frame[list(columns)].astype(float).apply(np.isfinite).all(axis=1)
    return frame.loc[finite]


def price_performance_chart(
    metrics: pd.DataFrame,
    headline_bin: str | None,
    path: str | Path,
    cost_per_transactions: int = 10_000,
    p95_latency_slo_s: float | None = None,
) -> Path | None:
    """Where each branch x load point sits between speed and cost: lower-left is better."""
    data = metrics[metrics["payload_bin"] == headline_bin] if headline_bin is not None else metrics.iloc[0:0]
    data = _finite(data, "latency_p95_s", "price_per_txn_usd")
    if data.empty:
        return None
    target = Path(path)
    colors = _branch_colors(sorted(data["target_name"].unique()))
    tpm = data["transactions_per_minute"].astype(float).fillna(0.0)
    scale = 600.0 / max(float(tpm.max()), 1e-9)
    with _figure(target) as (_, axes):
        for name, group in data.groupby("target_name", sort=True):
            sizes = (group["transactions_per_minute"].astype(float).fillna(0.0) * scale).clip(lower=30.0)
            axes.scatter(
                group["latency_p95_s"],
                group["price_per_txn_usd"] * cost_per_transactions,
                s=sizes,
                color=colors[str(name)],
                alpha=0.6,
                edgecolors="black",
                linewidths=0.5,
                label=str(name),
            )
            for row in group.itertuples():
                cost_usd = float(row.price_per_txn_usd) * cost_per_transactions  # type: ignore[arg-type]
                axes.annotate(
                    _load_label(row),
                    (float(row.latency_p95_s), cost_usd),  # type: ignore[arg-type]
                    textcoords="offset points",
                    xytext=(6, 6),
                    fontsize=8,
                )
        if p95_latency_slo_s is not None:
            axes.axvline(p95_latency_slo_s, color="red", linestyle="--", linewidth=1, label="p95 latency SLO")
        axes.set_title(f"Price vs performance, bin {headline_bin} (marker size: transactions per minute)")
        axes.set_xlabel("p95 end-to-end latency (s)")
        axes.set_ylabel(f"Cost per {cost_per_transactions:,} transactions (USD)")
        axes.grid(True, alpha=0.3)
        legend = axes.legend(fontsize=8)
        for handle in legend.legend_handles:  # one marker size in the legend: size encodes TPM, not branch
            if hasattr(handle, "set_sizes"):
                handle.set_sizes([40.0])
    return target


def latency_vs_prompt_tokens_chart(metrics: pd.DataFrame, path: str | Path) -> Path | None:
    """How latency grows with prompt length: one panel per branch, one line per concurrency level."""
    data = _finite(metrics, "prompt_tokens_mean", "latency_p95_s")
    data = data[data["concurrency"].notna()]
    if data.empty:
        return None
    target = Path(path)
    branches = sorted(data["target_name"].unique())
    levels = sorted(int(c) for c in data["concurrency"].unique())
    level_colors = {level: _color(index) for index, level in enumerate(levels)}
    columns = min(len(branches), 3)
    rows = math.ceil(len(branches) / columns)
    with _figure(
        target, width_in=4.5 * columns, height_in=3.6 * rows + 0.6, nrows=rows, ncols=columns, squeeze=False
    ) as (figure, axes_grid):
        for index, name in enumerate(branches):
            axes = axes_grid[index // columns][index % columns]
            branch = data[data["target_name"] == name]
            for level in levels:
                points = branch[branch["concurrency"] == level].sort_values("prompt_tokens_mean")
                if points.empty:
                    continue
                color = level_colors[level]
                axes.plot(
                    points["prompt_tokens_mean"],
                    points["latency_p95_s"],
                    "o-",
                    color=color,
                    label=f"c={level} p95",
                )
                axes.plot(
                    points["prompt_tokens_mean"],
                    points["latency_mean_s"],
                    "x:",
                    color=color,
                    label=f"c={level} mean",
                )
            axes.set_title(str(name), fontsize=10)
            axes.set_xlabel("mean prompt tokens of the bin (tokens)")
            axes.set_ylabel("end-to-end latency (s)")
            axes.grid(True, alpha=0.3)
            axes.legend(fontsize=7)
        for index in range(len(branches), rows * columns):
            axes_grid[index // columns][index % columns].set_visible(False)
        figure.suptitle("Latency vs prompt length (p95 solid, mean dotted)")
    return target


def throughput_vs_concurrency_chart(
    metrics: pd.DataFrame, headline_bin: str | None, path: str | Path
) -> Path | None:
    """Whether more concurrency still buys throughput, per branch, on the headline bin."""
    data = metrics[metrics["payload_bin"] == headline_bin] if headline_bin is not None else metrics.iloc[0:0]
    data = data[data["concurrency"].notna()]
    if data.empty:
        return None
    target = Path(path)
    colors = _branch_colors(sorted(data["target_name"].unique()))
    with _figure(target, width_in=11.0, height_in=4.5, ncols=2) as (figure, (tpm_axes, tokens_axes)):
        for name, group in data.groupby("target_name", sort=True):
            group = group.sort_values("concurrency")
            color = colors[str(name)]
            tpm_axes.plot(
                group["concurrency"], group["transactions_per_minute"], "o-", color=color, label=str(name)
            )
            tokens_axes.plot(
                group["concurrency"],
                group["completion_token_throughput_per_s"],
                "o-",
                color=color,
                label=str(name),
            )
        tpm_axes.set_title("Transactions per minute")
        tpm_axes.set_ylabel("successful requests per minute")
        tokens_axes.set_title("Completion-token throughput")
        tokens_axes.set_ylabel("completion tokens per second")
        levels = sorted(int(c) for c in data["concurrency"].unique())
        for axes in (tpm_axes, tokens_axes):
            _concurrency_axis(axes, levels)
            axes.set_xlabel("concurrency (requests in flight)")
            axes.grid(True, alpha=0.3)
            axes.legend(fontsize=8)
        figure.suptitle(f"Throughput vs concurrency, bin {headline_bin}")
    return target


def throughput_vs_rate_chart(
    metrics: pd.DataFrame, headline_bin: str | None, path: str | Path
) -> Path | None:
    """Open loop: whether the endpoint served the offered rate, and the latency a caller on schedule saw.

    Achieved throughput is successes over the window; a point below the diagonal fell behind the offered
    rate. Client-bound points are drawn hollow: there the runner, not the endpoint, fell behind.
    """
    data = metrics[metrics["payload_bin"] == headline_bin] if headline_bin is not None else metrics.iloc[0:0]
    data = data[data["request_rate_per_s"].notna()]
    if data.empty:
        return None
    target = Path(path)
    colors = _branch_colors(sorted(data["target_name"].unique()))
    with _figure(target, width_in=11.0, height_in=4.5, ncols=2) as (figure, (rate_axes, latency_axes)):
        for name, group in data.groupby("target_name", sort=True):
            group = group.sort_values("request_rate_per_s")
            color = colors[str(name)]
            achieved_per_s = group["transactions_per_minute"].astype(float) / 60.0
            rate_axes.plot(group["request_rate_per_s"], achieved_per_s, "-", color=color, label=str(name))
            latency_axes.plot(
                group["request_rate_per_s"], group["latency_from_schedule_p95_s"], "-", color=color
            )
            bound = np.array([_bound(row) for row in group.itertuples()], dtype=bool)
            latency_s = group["latency_from_schedule_p95_s"].astype(float)
            for axes, values in ((rate_axes, achieved_per_s), (latency_axes, latency_s)):
                offered = group["request_rate_per_s"].to_numpy(dtype=float)
                figures = values.to_numpy(dtype=float)
                axes.plot(offered[~bound], figures[~bound], "o", color=color)
                axes.plot(offered[bound], figures[bound], "o", markerfacecolor="none", color=color)
        top = float(data["request_rate_per_s"].max())
        rate_axes.plot([0, top], [0, top], "--", color="grey", linewidth=1, label="achieved = offered")
        rate_axes.set_title("Achieved vs offered rate")
        rate_axes.set_xlabel("offered rate (requests per second)")
        rate_axes.set_ylabel("successful requests per second")
        latency_axes.set_title("p95 latency from the scheduled time")
        latency_axes.set_xlabel("offered rate (requests per second)")
        latency_axes.set_ylabel("end-to-end latency from schedule (s)")
        for axes in (rate_axes, latency_axes):
            axes.grid(True, alpha=0.3)
        rate_axes.legend(fontsize=8)
        figure.suptitle(f"Open loop, bin {headline_bin} (hollow marks: client-bound)")
    return target


def ttft_distribution_chart(samples: pd.DataFrame, path: str | Path) -> Path | None:
    """TTFT ECDF per branch, all load points of the branch pooled: the shape behind the percentiles.

    ``samples`` are points of each branch's ECDF (ttft_samples.sql): every request of a small branch, about
    a thousand points of a large one, so the chart costs the same at any number of requests.
    """
    data = samples[np.isfinite(samples["ttft_s"].astype(float))]
    if data.empty:
        return None
    target = Path(path)
    colors = _branch_colors(sorted(data["target_name"].unique()))
    with _figure(target) as (_, axes):
        for name, group in data.groupby("target_name", sort=True):
            group = group.sort_values("cumulative_share", kind="stable")
            values = group["ttft_s"].to_numpy(dtype=float)
            share = group["cumulative_share"].to_numpy(dtype=float)
            count = int(group["sample_count"].max())
            axes.step(values, share, where="post", color=colors[str(name)], label=f"{name} (n={count})")
        axes.set_title("Time to first token, empirical CDF per branch (successful requests, all load points)")
        axes.set_xlabel("TTFT (s)")
        axes.set_ylabel("share of requests")
        axes.set_ylim(0, 1.02)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    return target


def error_rate_vs_concurrency_chart(
    metrics: pd.DataFrame, headline_bin: str | None, path: str | Path
) -> Path | None:
    """Where a branch starts failing requests; drawn only when some load point had errors."""
    data = metrics[metrics["payload_bin"] == headline_bin] if headline_bin is not None else metrics.iloc[0:0]
    data = data[data["concurrency"].notna()]
    if data.empty or not (data["error_rate"].astype(float) > 0).any():
        return None
    target = Path(path)
    colors = _branch_colors(sorted(data["target_name"].unique()))
    with _figure(target, height_in=4.0) as (_, axes):
        for name, group in data.groupby("target_name", sort=True):
            group = group.sort_values("concurrency")
            axes.plot(
                group["concurrency"],
                group["error_rate"] * 100,
                "o-",
                color=colors[str(name)],
                label=str(name),
            )
        _concurrency_axis(axes, sorted(int(c) for c in data["concurrency"].unique()))
        axes.set_title(f"Error rate vs concurrency, bin {headline_bin}")
        axes.set_xlabel("concurrency (requests in flight)")
        axes.set_ylabel("error rate (% of measured requests)")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    return target


def errors_by_class_chart(view: ReportView, path: str | Path) -> Path | None:
    """Which failures each branch had; drawn only when some measured request failed."""
    counts = {branch.target_name: branch.errors_by_class for branch in view.branches}
    classes = list(dict.fromkeys(name for by_class in counts.values() for name in by_class))
    names = [name for name, by_class in counts.items() if by_class]
    if not classes or not names:
        return None
    target = Path(path)
    with _figure(target, height_in=max(2.5, 0.5 * len(names) + 1.5)) as (_, axes):
        left = [0] * len(names)
        for index, error_class in enumerate(classes):
            widths = [counts[name].get(error_class, 0) for name in names]
            axes.barh(names, widths, left=left, color=_color(index), label=error_class)
            left = [start + width for start, width in zip(left, widths, strict=True)]
        axes.invert_yaxis()  # branches top to bottom in report order
        axes.set_title("Errors by class")
        axes.set_xlabel("failed measured requests")
        axes.grid(True, axis="x", alpha=0.3)
        axes.legend(fontsize=8)
    return target


def majority_accuracy_chart(accuracy: AccuracyView | None, path: str | Path) -> Path | None:
    """One bar per candidate: its majority-vote accuracy and Wilson interval; drawn only for a judged run."""
    if accuracy is None or not accuracy.candidates:
        return None
    target = Path(path)
    candidates = accuracy.candidates
    names = [c.target_name for c in candidates]
    values = np.array([(c.accuracy or 0.0) * 100 for c in candidates])
    low = np.array(
        [values[i] - (c.interval[0] * 100 if c.interval else values[i]) for i, c in enumerate(candidates)]
    )
    high = np.array(
        [(c.interval[1] * 100 if c.interval else values[i]) - values[i] for i, c in enumerate(candidates)]
    )
    with _figure(target, width_in=max(6.5, 1.2 * len(names) + 2.5), height_in=4.5) as (_, axes):
        positions = np.arange(len(names))
        axes.bar(positions, values, color=[_color(i) for i in range(len(names))], alpha=0.8)
        axes.errorbar(positions, values, yerr=[low, high], fmt="none", ecolor="black", capsize=5)
        for position, c in zip(positions, candidates, strict=True):
            axes.annotate(
                f"{c.majority_correct}/{c.prompts}" + (f", {c.no_majority} tie" if c.no_majority else ""),
                (float(position), 2.0),
                ha="center",
                fontsize=8,
            )
        if accuracy.min_accuracy is not None:
            axes.axhline(accuracy.min_accuracy * 100, color="red", linestyle="--", linewidth=1, label="floor")
            axes.legend(fontsize=8)
        axes.set_xticks(positions, names)
        axes.set_ylim(0, 105)
        axes.set_ylabel("majority-vote accuracy (% of judged prompts)")
        axes.set_title("Majority-vote accuracy (95% Wilson interval)")
        axes.grid(True, axis="y", alpha=0.3)
    return target


def accuracy_vs_prompt_length_chart(
    accuracy: AccuracyView | None, bins: tuple[str, ...], path: str | Path
) -> Path | None:
    """A line per candidate across the prompt-length bins; drawn only for a judged run."""
    if accuracy is None or not accuracy.per_bin:
        return None
    target = Path(path)
    labels = [label for label in bins if any(c.payload_bin == label for c in accuracy.per_bin)]
    labels += sorted({str(c.payload_bin) for c in accuracy.per_bin} - set(labels))
    by_branch: dict[tuple[str, str], list[Any]] = {}
    for c in accuracy.per_bin:
        by_branch.setdefault((c.target_name, c.branch_id), []).append(c)
    with _figure(target) as (_, axes):
        for index, ((name, _), figures) in enumerate(sorted(by_branch.items())):
            figures = sorted(figures, key=lambda c: labels.index(str(c.payload_bin)))
            x = np.array([labels.index(str(c.payload_bin)) for c in figures], dtype=float)
            y = np.array([(c.accuracy or 0.0) * 100 for c in figures])
            low = np.array(
                [c.interval[0] * 100 if c.interval else v for c, v in zip(figures, y, strict=True)]
            )
            high = np.array(
                [c.interval[1] * 100 if c.interval else v for c, v in zip(figures, y, strict=True)]
            )
            offset = (index - (len(by_branch) - 1) / 2) * 0.04  # keep the intervals of equal points apart
            axes.errorbar(
                x + offset, y, yerr=[y - low, high - y], fmt="o-", color=_color(index), capsize=3, label=name
            )
        if accuracy.min_accuracy is not None:
            axes.axhline(accuracy.min_accuracy * 100, color="red", linestyle="--", linewidth=1, label="floor")
        axes.set_xticks(range(len(labels)), labels)
        axes.set_ylim(0, 105)
        axes.set_xlabel("prompt-length bin (prompt tokens)")
        axes.set_ylabel("majority-vote accuracy (% of judged prompts)")
        axes.set_title("Accuracy vs prompt length (95% Wilson intervals)")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    return target


def server_utilization_chart(view: ReportView, path: str | Path) -> Path | None:
    """Counts (running, waiting) above, percentages (KV-cache usage, GPU, CPU) below, against the time since
    the run's first sample; one color per branch, one line style per series."""
    server = view.server
    if server is None or not server.series:
        return None
    counts = ("running requests", "waiting requests")
    styles = {
        "running requests": "-",
        "waiting requests": ":",
        "KV-cache usage": "-",
        "GPU utilization": "--",
    }
    start_s = min(sample.epoch_s for sample in server.series)
    span_s = max(sample.epoch_s for sample in server.series) - start_s
    unit_s, unit = (60.0, "minutes") if span_s >= 120 else (1.0, "seconds")
    names = {branch.branch_id: branch.target_name for branch in view.branches}
    branch_ids = sorted({sample.branch_id for sample in server.series})
    colors = _branch_colors(branch_ids)
    target = Path(path)
    with _figure(target, height_in=6.0, nrows=2, sharex=True) as (_, (upper, lower)):
        for branch_id in branch_ids:
            for label in dict.fromkeys(s.label for s in server.series if s.branch_id == branch_id):
                picked = [s for s in server.series if s.branch_id == branch_id and s.label == label]
                x = [(s.epoch_s - start_s) / unit_s for s in picked]
                scale = 100.0 if label == "KV-cache usage" else 1.0
                y = [s.value * scale for s in picked]
                axes = upper if label in counts else lower
                axes.plot(
                    x,
                    y,
                    styles.get(label, "-."),
                    color=colors[branch_id],
                    label=f"{names.get(branch_id, branch_id)}: {label}",
                    linewidth=1.2,
                    drawstyle="steps-post" if label in counts else "default",
                )
        upper.set_ylabel("requests")
        lower.set_ylabel("percent")
        lower.set_xlabel(f"{unit} since the first sample")
        for axes in (upper, lower):
            axes.grid(True, alpha=0.3)
            if axes.lines:
                axes.legend(fontsize=7)
    return target


def load_point_frame(view: ReportView) -> pd.DataFrame:
    """The view's load points as the chart functions' frame: the summary's columns and dtypes, in the
    summary's sort order whatever order the view was built from."""
    records = [dict(point.figures) for point in view.load_points]
    frame = typed_frame(pd.DataFrame.from_records(records, columns=list(METRIC_COLUMNS)), METRIC_COLUMNS)
    return frame.sort_values(SORT_COLUMNS, kind="stable", na_position="last").reset_index(drop=True)


def draw_charts(view: ReportView, samples: pd.DataFrame, report_dir: Path) -> dict[str, Path]:
    """Chart name -> PNG for every chart that has data (others are left out, not drawn empty).

    ``samples`` has the columns of ``report.query.TTFT_SAMPLE_COLUMNS`` (points of each branch's TTFT
    distribution, which the view's per-load-point aggregates do not have).
    """
    metrics = load_point_frame(view)
    headline_bin = view.headline_bin
    drawers: dict[str, Callable[[Path], Path | None]] = {
        "price_performance": lambda path: price_performance_chart(
            metrics,
            headline_bin,
            path,
            cost_per_transactions=view.cost_per_transactions,
            p95_latency_slo_s=view.slo.p95_latency_s,
        ),
        "latency_vs_prompt_tokens": lambda path: latency_vs_prompt_tokens_chart(metrics, path),
        "throughput_vs_concurrency": lambda path: throughput_vs_concurrency_chart(
            metrics, headline_bin, path
        ),
        "throughput_vs_rate": lambda path: throughput_vs_rate_chart(metrics, headline_bin, path),
        "ttft_distribution": lambda path: ttft_distribution_chart(samples, path),
        "error_rate_vs_concurrency": lambda path: error_rate_vs_concurrency_chart(
            metrics, headline_bin, path
        ),
        "errors_by_class": lambda path: errors_by_class_chart(view, path),
        "majority_accuracy": lambda path: majority_accuracy_chart(view.accuracy, path),
        "accuracy_vs_prompt_length": lambda path: accuracy_vs_prompt_length_chart(
            view.accuracy, view.bins, path
        ),
        "server_utilization": lambda path: server_utilization_chart(view, path),
    }
    drawn = {}
    for spec in CHARTS:
        path = report_dir / f"{spec.name}.png"
        path.unlink(missing_ok=True)  # a chart from an earlier render must not outlive its data
        written = drawers[spec.name](path)
        if written is not None:
            drawn[spec.name] = written
    return drawn
