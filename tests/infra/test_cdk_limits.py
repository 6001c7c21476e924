"""The history bound the plan enforces (fmbench.cloud.limits) holds for the synthesized state machine."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from template_queries import state_machine_definition

from fmbench.cloud.limits import (
    BRANCH_STATES,
    ENDINGS,
    MAP_ITERATION_EVENTS,
    OUTSIDE_MAP_EVENTS,
    STATE_EVENTS,
    asl_state_events,
    branch_history_events,
)


@pytest.fixture(scope="module")
def definition(template_json: dict[str, Any]) -> dict[str, Any]:
    return state_machine_definition(template_json)


@pytest.fixture(scope="module")
def branch_states(definition: dict[str, Any]) -> dict[str, Any]:
    states: dict[str, Any] = definition["States"]["Branches"]["ItemProcessor"]["States"]
    return states


def test_every_state_of_a_branch_is_counted_with_the_events_its_definition_allows(
    branch_states: dict[str, Any],
) -> None:
    counted = {state.name: state.events_per_visit for state in BRANCH_STATES}
    # A stand-in ending counts for each of the states it stands for: the largest of them.
    for stand_in, names in ENDINGS.items():
        assert counted[stand_in] == max(asl_state_events(branch_states[name]) for name in names), stand_in
        del counted[stand_in]
    named = {name for names in ENDINGS.values() for name in names}

    assert set(branch_states) == set(counted) | named
    assert counted == {name: asl_state_events(branch_states[name]) for name in counted}


def test_only_the_status_poll_loop_repeats(branch_states: dict[str, Any]) -> None:
    loop = [state.name for state in BRANCH_STATES if state.visits == "per_poll"]

    # Wait -> EndpointStatus -> CountStatusPoll -> EndpointReady, which goes back to the Wait or leaves.
    assert loop == ["WaitForEndpoint", "EndpointStatus", "CountStatusPoll", "EndpointReady"]
    for current, following in itertools.pairwise(loop):
        assert branch_states[current]["Next"] == following
    ready = branch_states["EndpointReady"]
    assert ready["Default"] == "WaitForEndpoint"
    assert {choice["Next"] for choice in ready["Choices"]} == {
        "RunLoad",
        "EndpointFailed",
        "EndpointTimedOut",
    }
    # Without the loop's way back the branch is acyclic: no other state is visited more than once.
    edges = {
        name: {
            following
            for following in [
                state.get("Next"),
                state.get("Default"),
                *(choice["Next"] for choice in state.get("Choices", [])),
                *(catch["Next"] for catch in state.get("Catch", [])),
            ]
            if following and (name, following) != ("EndpointReady", "WaitForEndpoint")
        }
        for name, state in branch_states.items()
    }
    remaining = dict(edges)
    while remaining:
        sinks = [name for name, targets in remaining.items() if not targets & set(remaining)]
        assert sinks, f"a cycle among {sorted(remaining)}"
        for name in sinks:
            del remaining[name]


def test_the_states_around_the_map_fit_their_allowance(definition: dict[str, Any]) -> None:
    outside = sum(asl_state_events(state) for state in definition["States"].values())

    # Execution started and ended, and every state outside the Map (the Map itself included) once.
    assert 2 + outside <= OUTSIDE_MAP_EVENTS


def test_a_deployed_branch_at_60_polls_writes_at_most_1733_events() -> None:
    # NeedsDeploy, Deploy (6 attempts), 60 x (Wait, EndpointStatus with 6 attempts, CountStatusPoll,
    # EndpointReady), RunLoad (6 .sync attempts), Teardown (39 attempts), BranchResult, its end, and the
    # iteration's own two.
    per_poll = STATE_EVENTS + (2 + 3 * 6) + STATE_EVENTS + STATE_EVENTS
    once = STATE_EVENTS + (2 + 3 * 6) + (2 + 4 * 6) + (2 + 3 * 39) + STATE_EVENTS + STATE_EVENTS
    assert (
        branch_history_events(deploys=True, max_status_polls=60)
        == (MAP_ITERATION_EVENTS + once + 60 * per_poll)
        == 1733
    )
