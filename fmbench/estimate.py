"""What a run may cost, bounded before anything is deployed, and the budget and time-to-live checks on it.

Every figure is an upper bound, not a forecast: the budget is a promise that a run will not cost more, so
the estimate takes the worst case the workflow allows (every request running into its timeout, every
endpoint using its whole deployment allowance) and states each bound in ``basis``. The bounds are:

- deploy: ``max_status_polls`` x the stack's status poll interval (the workflow gives up after that);
- load: per load point, closed loop ``ramp_up_s + ceil(requests / concurrency) x (request_timeout_s + 1 s)``;
  open loop the arrival span (Poisson: expected span plus three standard deviations) plus
  ``request_timeout_s + 1 s``, or ``ceil(requests / max_in_flight)`` timeouts when capped; a timed phase
  its seconds plus one timeout;
  plus the probe; a capacity search (``load.search``) adds ``max_points`` levels x bins x its longest point
  (the bound above at its lowest level; an open loop's capped waits at its highest), or its time budget
  plus one level when that is lower; a quality pass (``evaluation.quality_pass``) adds
  ``max_answers_per_bin`` x bins requests one at a time, each ``request_timeout_s + 1 s``; capped by the
  runner task's timeout in the cloud;
- teardown: a fixed allowance (deletion is asynchronous and takes minutes);
- Bedrock tokens: every request with a prompt at its bin's upper token bound and ``max_new_tokens``
  generated, a search's ``max_points`` levels counted at its highest level; with a timed phase, the closed
  loop's requests at ``concurrency x seconds / 0.1 s`` and the open loop's at the arrival count plus three
  standard deviations; a quality pass adds ``max_answers_per_bin`` requests per bin.
- judging (a suite with ``evaluation``), per judge: the answers judged (per branch and bin,
  ``max_answers_per_bin`` or the bin's requests if fewer; with a quality pass ``max_answers_per_bin``)
  x 2 calls (the re-ask) x (a prompt of the template's ``TEMPLATE_TOKENS_BOUND`` tokens, the bin's largest
  prompt twice (question, and references as long), ``max_new_tokens`` of candidate) in, the judge's
  ``max_tokens`` out, at the judge's prices; tokens counted as the workload's tokenizer counts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Literal

from pydantic import Field

from fmbench.config import (
    BedrockTarget,
    Budget,
    EmulatorTarget,
    Evaluation,
    LoadPlan,
    StrictModel,
    SuiteProblem,
)
from fmbench.judge_format import TEMPLATE_TOKENS_BOUND

if TYPE_CHECKING:
    from fmbench.spec import BranchSpec

# The load engine bounds every request at request_timeout_s + 1 s (fmbench/loadgen) whatever the client does.
REQUEST_BOUND_MARGIN_S: Final = 1.0
# The runner probes the endpoint once before the sweep, at most this long (fmbench.runner.PROBE_TIMEOUT_S).
PROBE_BOUND_S: Final = 10.0
# Shortest request counted when a timed closed loop's request count must be bounded (Bedrock tokens).
MIN_PLAUSIBLE_REQUEST_S: Final = 0.1
# Poisson arrivals have no hard bound: mean plus this many standard deviations (exceeded about 0.1% of runs).
POISSON_MARGIN_SIGMAS: Final = 3.0
# cdk.json's defaults: fmbench:statusPollSeconds and fmbench:maxDeployMinutes (SageMaker's own limits for a
# deployment: 30 minutes to download the model plus 30 for the container's health check).
DEFAULT_STATUS_POLL_S: Final = 60.0
DEFAULT_MAX_DEPLOY_S: Final = 3600.0
DEFAULT_MAX_STATUS_POLLS: Final = 60
# From DeleteEndpoint to the instances being released; SageMaker takes a few minutes.
DEFAULT_TEARDOWN_S: Final = 600.0
SECONDS_PER_HOUR: Final = 3600.0

Billing = Literal["instance", "tokens", "none"]


class BudgetExceededError(ValueError):
    """The suite's estimated cost is above ``budget.max_usd`` (or cannot be bounded): nothing was deployed."""

    def __init__(self, estimate: CostEstimate, max_usd: float, reason: str) -> None:
        self.estimate = estimate
        self.max_usd = max_usd
        super().__init__(
            f"{reason}\n{estimate.describe()}\n"
            "Lower the load (fewer levels, bins or requests, a shorter request_timeout_s), give missing "
            "prices under pricing, or raise budget.max_usd."
        )


class EstimateSettings(StrictModel):
    """How the environment bounds a branch's life: the stack's polling, runner and execution timeouts.

    Locally there is no deployment and no timeout, so the defaults leave the load uncapped; the cloud plan
    step passes the stack's values.
    """

    status_poll_s: float = Field(default=DEFAULT_STATUS_POLL_S, gt=0)
    max_status_polls: int = Field(default=DEFAULT_MAX_STATUS_POLLS, ge=0)
    teardown_s: float = Field(default=DEFAULT_TEARDOWN_S, ge=0)
    runner_timeout_s: float | None = Field(default=None, gt=0, description="Cap on one branch's load.")
    execution_timeout_s: float | None = Field(default=None, gt=0, description="Cap on an endpoint's life.")


class CostPart(StrictModel):
    """One branch's share of the estimate, with the bounds it was computed from."""

    branch_id: str
    target_name: str
    platform: str
    billing: Billing = Field(
        description="instance: instance-hours; tokens: Bedrock tokens; none: not billed."
    )
    emulated: bool = Field(default=False, description="A local emulator's stand-in price: nothing is billed.")
    instance_type: str | None = None
    instance_count: int | None = None
    price_per_hour_usd: float | None = None
    deploy_s: float = Field(default=0.0, description="Upper bound of the time to InService, s.")
    run_s: float = Field(default=0.0, description="Upper bound of the load (probe and every load point), s.")
    teardown_s: float = Field(default=0.0, description="Allowance for the deletion, s.")
    requests: int | None = Field(default=None, description="Upper bound of requests (token billing).")
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_price_per_1k_tokens_usd: float | None = None
    output_price_per_1k_tokens_usd: float | None = None
    usd: float | None = Field(description="Upper bound in USD; null when a price is unknown.")
    basis: str = Field(description="How the figure is bounded, in words.")

    @property
    def lifetime_s(self) -> float:
        return self.deploy_s + self.run_s + self.teardown_s

    def describe(self) -> str:
        head = f"{self.target_name} ({self.branch_id}): "
        if self.billing == "instance":
            instance = f"{self.instance_type or 'instance'} x{self.instance_count or 1}"
            price = (
                f"${self.price_per_hour_usd:g}/h" if self.price_per_hour_usd is not None else "unknown $/h"
            )
            phases = f"load {_hours(self.run_s)}"
            if self.deploy_s or self.teardown_s:
                phases = f"deploy {_hours(self.deploy_s)} + {phases} + teardown {_hours(self.teardown_s)}"
            head += f"{'emulated ' if self.emulated else ''}{instance} at {price} for up to "
            head += f"{_hours(self.lifetime_s)} ({phases})"
        elif self.billing == "tokens":
            kind = "judge calls" if self.platform == "judge" else "requests"
            head += (
                f"{'' if self.platform == 'judge' else 'Bedrock, '}up to {self.requests or 0:,} {kind}: "
                f"{self.input_tokens or 0:,} input tokens "
                f"at {_price_1k(self.input_price_per_1k_tokens_usd)} + {self.output_tokens or 0:,} output "
                f"tokens at {_price_1k(self.output_price_per_1k_tokens_usd)}"
            )
        else:
            head += self.basis
        figure = usd_text(self.usd) if self.usd is not None else "unknown"
        return f"{head} = {figure}" + (" (emulated: nothing is billed)" if self.emulated else "")


class CostEstimate(StrictModel):
    """Upper bound of a run's cost before anything is deployed; not ``complete`` when a price is unknown."""

    total_usd: float = Field(description="Sum of the parts with a known price, USD.")
    complete: bool = Field(description="Every part has a price; otherwise total_usd leaves some out.")
    parts: list[CostPart]

    @property
    def unpriced(self) -> list[CostPart]:
        return [part for part in self.parts if part.usd is None]

    def describe(self) -> str:
        """The estimate as lines a user reads in an error or on the console."""
        total = usd_text(self.total_usd) + ("" if self.complete else " plus parts of unknown price")
        lines = [f"estimated cost (upper bound): {total}"]
        lines += [f"  {part.describe()}" for part in self.parts]
        return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / SECONDS_PER_HOUR:.2f} h"


def usd_text(value: float) -> str:
    """Dollars: cents from $1 up, else four significant digits without an exponent (token prices are
    fractions of a cent, and a small budget must not read as $0.00)."""
    if value >= 1:
        return f"${value:,.2f}"
    if value <= 0:
        return "$0"
    decimals = -math.floor(math.log10(value)) + 3
    return "$" + f"{value:.{decimals}f}".rstrip("0").rstrip(".")


def _price_1k(price: float | None) -> str:
    return f"{usd_text(price)}/1k" if price is not None else "unknown $/1k"


# ------------------------------------------------------------------------------------------ bounds


def _request_bound_s(load: LoadPlan) -> float:
    return load.request_timeout_s + REQUEST_BOUND_MARGIN_S


def _counted_requests(load: LoadPlan) -> int:
    return load.warmup_requests + (load.requests_per_level or 0) + load.cooldown_requests


def _timed_s(load: LoadPlan) -> float:
    return (load.warmup_s or 0.0) + (load.duration_s or 0.0) + (load.cooldown_s or 0.0)


def _poisson_bound(mean: float) -> float:
    return mean + POISSON_MARGIN_SIGMAS * math.sqrt(mean) if mean > 0 else 0.0


def _arrivals_in(load: LoadPlan, rate_per_s: float, seconds: float) -> int:
    expected = rate_per_s * seconds
    if load.arrival == "constant":
        return math.floor(expected) + 1 if seconds > 0 else 0
    return math.ceil(_poisson_bound(expected))


def _arrival_span_s(load: LoadPlan, rate_per_s: float, requests: int) -> float:
    if requests <= 1:
        return 0.0
    if load.arrival == "constant":
        return (requests - 1) / rate_per_s
    return _poisson_bound(requests - 1) / rate_per_s


def load_point_bound_s(
    load: LoadPlan, *, concurrency: int | None = None, rate_per_s: float | None = None
) -> float:
    """Longest one load point can take, all phases included (see the module docstring)."""
    timeout_s = _request_bound_s(load)
    counted = _counted_requests(load)
    timed_s = _timed_s(load)
    if concurrency is not None:
        bound_s = load.ramp_up_s + math.ceil(counted / concurrency) * timeout_s
        return bound_s + (timed_s + timeout_s if timed_s else 0.0)
    assert rate_per_s is not None
    arrivals = counted + _arrivals_in(load, rate_per_s, timed_s)
    span_s = _arrival_span_s(load, rate_per_s, counted) + timed_s
    waits = math.ceil(arrivals / load.max_in_flight) if load.max_in_flight else 0
    return span_s + (waits + 1) * timeout_s


def load_point_requests_bound(
    load: LoadPlan, *, concurrency: int | None = None, rate_per_s: float | None = None
) -> int:
    """Most requests one load point can send, all phases included."""
    counted = _counted_requests(load)
    timed_s = _timed_s(load)
    if not timed_s:
        return counted
    if concurrency is not None:
        return counted + math.ceil(concurrency * timed_s / MIN_PLAUSIBLE_REQUEST_S) + concurrency
    assert rate_per_s is not None
    return counted + _arrivals_in(load, rate_per_s, timed_s)


def search_point_bound_s(load: LoadPlan) -> float:
    """Longest one load point of the capacity search can take, whichever level it tries: a closed loop's
    bound is highest at the lowest concurrency (``start``); an open loop's arrival span at the lowest rate
    and its capped waits at the highest, each taken at its worst."""
    search = load.search
    assert search is not None
    if search.mode == "concurrency":
        return load_point_bound_s(load, concurrency=int(search.start))
    timeout_s = _request_bound_s(load)
    counted = _counted_requests(load)
    timed_s = _timed_s(load)
    arrivals = counted + _arrivals_in(load, search.max, timed_s)
    span_s = _arrival_span_s(load, search.start, counted) + timed_s
    waits = math.ceil(arrivals / load.max_in_flight) if load.max_in_flight else 0
    return span_s + (waits + 1) * timeout_s


def search_run_bound_s(load: LoadPlan, bins: int) -> float:
    """The capacity search's bound: ``max_points`` levels x bins x the longest point; with a time budget,
    no level starts after ``max_duration_s``, so at most that plus one level (every bin) more."""
    search = load.search
    if search is None:
        return 0.0
    level_s = search_point_bound_s(load) * bins
    bound_s = search.max_points * level_s
    if search.max_duration_s is not None:
        bound_s = min(bound_s, search.max_duration_s + level_s)
    return bound_s


def search_requests_bound(load: LoadPlan) -> int:
    """Most requests the search's levels send to one bin: ``max_points`` points at its highest level."""
    search = load.search
    if search is None:
        return 0
    concurrency, rate = search.level(search.max)
    return search.max_points * load_point_requests_bound(load, concurrency=concurrency, rate_per_s=rate)


def quality_pass_requests_bound(spec: BranchSpec) -> int:
    """Most requests of the branch's quality pass (``evaluation.quality_pass``) per bin: one per judged
    prompt, at most ``max_answers_per_bin``; 0 without one."""
    return spec.quality_pass.max_answers_per_bin if spec.quality_pass is not None else 0


def quality_pass_bound_s(spec: BranchSpec) -> float:
    """The quality pass's endpoint time: its requests, one at a time, each bounded as any request is
    (``request_timeout_s + 1 s``), over every bin."""
    return quality_pass_requests_bound(spec) * len(spec.workload.bins) * _request_bound_s(spec.load)


def branch_run_bound_s(spec: BranchSpec, runner_timeout_s: float | None = None) -> float:
    """The probe plus every load point of the branch (levels x bins), its capacity search and its quality
    pass, capped by the runner's timeout."""
    per_bin = sum(
        load_point_bound_s(spec.load, concurrency=level, rate_per_s=rate)
        for level, rate in spec.load.levels()
    )
    bins = len(spec.workload.bins)
    bound_s = (
        PROBE_BOUND_S + per_bin * bins + search_run_bound_s(spec.load, bins) + quality_pass_bound_s(spec)
    )
    return min(bound_s, runner_timeout_s) if runner_timeout_s is not None else bound_s


# --------------------------------------------------------------------------------------------- parts


def _instance_part(spec: BranchSpec, settings: EstimateSettings, *, deployed: bool) -> CostPart:
    target = spec.target
    run_s = branch_run_bound_s(spec, settings.runner_timeout_s)
    deploy_s = settings.max_status_polls * settings.status_poll_s if deployed else 0.0
    teardown_s = settings.teardown_s if deployed else 0.0
    if deployed and settings.execution_timeout_s is not None:
        # The execution's timeout ends every state; the sweeper (ended run) deletes what is left at once.
        run_s = max(0.0, min(run_s, settings.execution_timeout_s - deploy_s - teardown_s))
    price = spec.instance_price_per_hour_usd
    lifetime_s = deploy_s + run_s + teardown_s
    usd = lifetime_s / SECONDS_PER_HOUR * target.instance_count * price if price is not None else None
    emulated = target.platform == "emulator"
    if emulated and price is None:
        usd = 0.0
    basis = (
        "endpoint creation to deletion: deploy bound + load bound + teardown allowance"
        if deployed
        else "emulated instance for the load bound"
    )
    if target.platform == "bedrock":
        basis = "provisioned throughput (model units x price per unit-hour) for the load bound"
    if usd is None:
        basis = (
            f"no price for instance type {spec.instance_type}: add it under "
            "pricing.instance_price_per_hour_usd"
        )
    return CostPart(
        branch_id=spec.branch_id,
        target_name=target.name,
        platform=target.platform,
        billing="instance",
        emulated=emulated,
        instance_type=spec.instance_type,
        instance_count=target.instance_count,
        price_per_hour_usd=price,
        deploy_s=deploy_s,
        run_s=run_s,
        teardown_s=teardown_s,
        usd=usd,
        basis=basis,
    )


def _token_part(spec: BranchSpec) -> CostPart:
    target = spec.target
    assert isinstance(target, BedrockTarget)
    per_bin = sum(
        load_point_requests_bound(spec.load, concurrency=c, rate_per_s=r) for c, r in spec.load.levels()
    ) + search_requests_bound(spec.load)
    per_bin += quality_pass_requests_bound(spec)
    requests = per_bin * len(spec.workload.bins)
    input_tokens = per_bin * sum(b.max_tokens - 1 for b in spec.workload.bins)
    output_tokens = requests * spec.workload.inference.max_new_tokens
    input_price = target.input_price_per_1k_tokens_usd
    output_price = target.output_price_per_1k_tokens_usd
    usd = None
    basis = "every request at its bin's largest prompt and max_new_tokens generated"
    if input_price is not None and output_price is not None:
        usd = (input_tokens * input_price + output_tokens * output_price) / 1000
    else:
        basis = (
            "no token price: give input_price_per_1k_tokens_usd and output_price_per_1k_tokens_usd "
            "on the target"
        )
    return CostPart(
        branch_id=spec.branch_id,
        target_name=target.name,
        platform=target.platform,
        billing="tokens",
        requests=requests,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_price_per_1k_tokens_usd=input_price,
        output_price_per_1k_tokens_usd=output_price,
        usd=usd,
        basis=basis,
    )


def _unbilled_part(spec: BranchSpec, basis: str) -> CostPart:
    target = spec.target
    return CostPart(
        branch_id=spec.branch_id,
        target_name=target.name,
        platform=target.platform,
        billing="none",
        instance_type=spec.instance_type,
        instance_count=target.instance_count,
        usd=0.0,
        basis=basis,
    )


def cost_part(spec: BranchSpec, settings: EstimateSettings) -> CostPart:
    target = spec.target
    if target.platform == "emulator":
        return _instance_part(spec, settings, deployed=False)
    if target.platform == "bedrock":
        provisioned = isinstance(target, BedrockTarget) and target.provisioned_model_units is not None
        return _instance_part(spec, settings, deployed=False) if provisioned else _token_part(spec)
    if target.needs_deploy:
        return _instance_part(spec, settings, deployed=True)
    if target.platform == "sagemaker":
        return _unbilled_part(spec, "existing endpoint: billed whether or not this run uses it")
    return _unbilled_part(spec, "an endpoint this run neither deploys nor pays per request")


def _judging_parts(specs: Sequence[BranchSpec], evaluation: Evaluation) -> list[CostPart]:
    """One part per judge: every answer it may judge, asked twice, at the largest prompts (module doc)."""
    answers = 0
    input_per_answer = 0
    for spec in specs:
        per_bin = sum(
            load_point_requests_bound(spec.load, concurrency=c, rate_per_s=r) for c, r in spec.load.levels()
        )
        # a quality pass sends the judged prompts whatever the load sent; else the load's answers are judged
        judged = (
            evaluation.max_answers_per_bin
            if spec.quality_pass
            else min(evaluation.max_answers_per_bin, per_bin)
        )
        answers += judged * len(spec.workload.bins)
        input_per_answer += judged * sum(
            TEMPLATE_TOKENS_BOUND + 2 * (b.max_tokens - 1) + spec.workload.inference.max_new_tokens
            for b in spec.workload.bins
        )
    parts = []
    for judge in evaluation.judges:
        calls = 2 * answers
        input_tokens = 2 * input_per_answer
        output_tokens = calls * evaluation.inference.max_tokens
        input_price = judge.input_price_per_1k_tokens_usd
        output_price = judge.output_price_per_1k_tokens_usd
        parts.append(
            CostPart(
                branch_id=f"evaluation/{judge.name}",
                target_name=f"judge {judge.name}",
                platform="judge",
                billing="tokens",
                emulated=isinstance(judge.target, EmulatorTarget),
                requests=calls,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                input_price_per_1k_tokens_usd=input_price,
                output_price_per_1k_tokens_usd=output_price,
                usd=(input_tokens * input_price + output_tokens * output_price) / 1000,
                basis=f"{answers:,} answers judged, each asked twice (the re-ask), at the bins' largest "
                "prompts with references as long, the judge's max_tokens answered",
            )
        )
    return parts


def estimate_branches(
    specs: Sequence[BranchSpec],
    settings: EstimateSettings | None = None,
    evaluation: Evaluation | None = None,
) -> CostEstimate:
    """The estimate of a set of branch specs (a plan's), and of judging their answers (``evaluation``)."""
    settings = settings or EstimateSettings()
    parts = [cost_part(spec, settings) for spec in specs]
    if evaluation is not None:
        parts += _judging_parts(specs, evaluation)
    return CostEstimate(
        total_usd=round(sum(part.usd or 0.0 for part in parts), 6),
        complete=all(part.usd is not None for part in parts),
        parts=parts,
    )


# -------------------------------------------------------------------------------------------- checks


def check_budget(estimate: CostEstimate, budget: Budget) -> None:
    """Raise ``BudgetExceededError`` when the estimate is above ``budget.max_usd`` or cannot be bounded."""
    if budget.max_usd is None:
        return
    if not estimate.complete:
        unpriced = ", ".join(part.target_name for part in estimate.unpriced)
        raise BudgetExceededError(
            estimate,
            budget.max_usd,
            f"budget.max_usd is {usd_text(budget.max_usd)}, but the cost of {unpriced} cannot be bounded "
            "(a price is unknown)",
        )
    if estimate.total_usd > budget.max_usd:
        raise BudgetExceededError(
            estimate,
            budget.max_usd,
            f"the estimated cost {usd_text(estimate.total_usd)} (an upper bound) exceeds budget.max_usd "
            f"{usd_text(budget.max_usd)}",
        )


def endpoint_ttl_problems(estimate: CostEstimate, endpoint_ttl_s: float) -> list[SuiteProblem]:
    """Deployed branches that could outlive their endpoint's time-to-live: the sweeper would delete the
    endpoint mid-run. Meaningful only when the load bound is capped by the runner's timeout (cloud)."""
    problems = []
    for part in estimate.parts:
        if part.billing != "instance" or part.emulated or part.lifetime_s <= endpoint_ttl_s:
            continue
        problems.append(
            SuiteProblem(
                path="execution.endpoint_ttl_s",
                reason=f"{endpoint_ttl_s:g} s is shorter than branch {part.branch_id}'s longest possible "
                f"endpoint life ({part.deploy_s:g} s deploy + {part.run_s:g} s load + {part.teardown_s:g} s "
                f"teardown = {part.lifetime_s:g} s): the sweeper would delete its endpoint mid-run; raise it",
            )
        )
    return problems
