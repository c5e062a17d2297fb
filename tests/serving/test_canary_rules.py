"""Canary rules with no services: the traffic split, sticky keys, the tag and the policy."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from mlops_core.canary import CanaryConfig, CanaryMode, StickyKey, canary_tag, choose_version
from mlops_core.canary_policy import (
    CanaryPolicy,
    Evidence,
    Verdict,
    VersionFigures,
    decide,
    evidence_record,
)
from mlops_core.canary_registry import serving_of

# --- the split -----------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [1, 10, 20, 50, 90])
def test_the_challenger_takes_its_weight_of_requests(weight: float) -> None:
    picks = [choose_version("1", "2", weight, None, f"request-{i}") for i in range(20_000)]
    share = picks.count("2") / len(picks) * 100
    assert abs(share - weight) < 1.0, share


def test_a_sticky_key_sees_one_version_whatever_the_request() -> None:
    for user in (f"user-{i}" for i in range(200)):
        seen = {choose_version("1", "2", 30, user, f"{user}-request-{i}") for i in range(20)}
        assert len(seen) == 1


def test_raising_the_weight_keeps_every_user_already_on_the_challenger() -> None:
    users = [f"user-{i}" for i in range(2000)]
    at_10 = {u for u in users if choose_version("1", "2", 10, u, "r") == "2"}
    at_30 = {u for u in users if choose_version("1", "2", 30, u, "r") == "2"}
    assert at_10 < at_30


def test_each_challenger_draws_its_own_users() -> None:
    users = [f"user-{i}" for i in range(2000)]
    on_2 = {u for u in users if choose_version("1", "2", 20, u, "r") == "2"}
    on_3 = {u for u in users if choose_version("1", "3", 20, u, "r") == "3"}
    assert on_2 != on_3


def test_no_weight_or_no_other_version_means_the_champion() -> None:
    assert choose_version("1", "2", 0, "u", "r") == "1"
    assert choose_version("4", "4", 100, "u", "r") == "4"
    assert choose_version("1", "2", 100, "u", "r") == "2"


# --- sticky keys and the registry tag ------------------------------------------------------


def test_sticky_keys_read_a_header_or_a_body_field() -> None:
    header = StickyKey.parse("header:X-User-Id")
    assert header.value_of({"X-User-Id": "alice"}, {}) == "alice"
    assert header.value_of({}, {"X-User-Id": "alice"}) is None
    field = StickyKey.parse("field:user_id")
    assert field.value_of({}, {"user_id": "bob", "data": [[1]]}) == "bob"
    assert field.value_of({}, {"user_id": 7}) == "7"
    assert field.value_of({}, {"parameters": {"user_id": "v2-user"}, "inputs": []}) == "v2-user"
    assert field.value_of({}, [[1, 2]]) is None
    assert str(field) == "field:user_id"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user_id", "must be 'header:<Header-Name>' or 'field:<body_field>'"),
        ("cookie:session", "must be 'header:<Header-Name>' or 'field:<body_field>'"),
        ("header:", "names no valid header"),
        ("header:X User", "names no valid header"),
        ("field:a b", "names no valid field"),
    ],
)
def test_a_bad_sticky_key_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StickyKey.parse(text)


def test_the_tag_round_trips_and_a_broken_one_reads_as_no_canary() -> None:
    config = CanaryConfig(
        version="3", weight=20, mode=CanaryMode.SHADOW, sticky_key="header:X-User-Id"
    )
    assert CanaryConfig.from_tag(config.to_tag()) == config
    assert config.sticky == StickyKey("header", "X-User-Id")
    for broken in (None, "", "{", '{"version": "3", "weight": 300}', '{"weight": 5}'):
        assert CanaryConfig.from_tag(broken) is None
    assert canary_tag("challenger") == "mlops.canary.challenger"


# --- the promotion policy ------------------------------------------------------------------

POLICY = CanaryPolicy(min_requests=100, min_seconds=60, max_seconds=600, min_feedback=30)
CHAMPION = VersionFigures(
    "1", requests=900, errors=0, p50_ms=2.0, p95_ms=4.0, quality_metric="accuracy",
    quality=0.96, quality_rows=400, drift_share=0.0,
)  # fmt: skip
AS_GOOD = replace(CHAMPION, version="2", requests=150, p95_ms=5.0, quality=0.95, quality_rows=60)


def evidence(challenger: VersionFigures, elapsed: float = 120) -> Evidence:
    return Evidence(CHAMPION, challenger, elapsed)


def test_an_as_good_challenger_is_promoted_with_its_numbers() -> None:
    decision = decide(evidence(AS_GOOD), POLICY)
    assert decision.verdict is Verdict.PROMOTE
    assert "v2 no worse than v1 after 150 requests and 120s" in decision.reason
    assert "live accuracy 0.950 >= 0.912 (champion 0.960 - 5%" in decision.reason
    record = evidence_record(decision, evidence(AS_GOOD), POLICY)
    assert record["verdict"] == "promote"
    assert record["challenger"]["quality"] == 0.95
    assert {check["name"] for check in record["checks"]} == {
        "error_rate",
        "p95_latency",
        "live_quality",
        "drift",
    }


def test_a_clearly_worse_challenger_is_aborted_naming_the_figure() -> None:
    shuffled = replace(AS_GOOD, quality=0.34)
    decision = decide(evidence(shuffled, elapsed=10), POLICY)
    assert decision.verdict is Verdict.ABORT
    assert decision.reason.startswith("live accuracy 0.340 < 0.912 (champion 0.960 - 5%")
    assert [check.name for check in decision.worse] == ["live_quality"]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"errors": 10}, "error rate 6.25% > champion 0.00% + 0.01"),
        ({"p95_ms": 40.0}, "p95 40.0 ms > 26.0 ms (champion 4.0 ms x 1.5 + 20)"),
        ({"drift_share": 0.5}, "drifted features 50% > champion 0% + 25%"),
    ],
)
def test_each_live_figure_can_abort(change: dict[str, float], fragment: str) -> None:
    decision = decide(evidence(replace(AS_GOOD, **change)), POLICY)
    assert decision.verdict is Verdict.ABORT
    assert fragment in decision.reason


def test_lower_is_better_for_error_metrics() -> None:
    champion = replace(CHAMPION, quality_metric="rmse", quality=10.0)
    good = replace(AS_GOOD, quality_metric="rmse", quality=10.4)
    bad = replace(AS_GOOD, quality_metric="rmse", quality=11.0)
    assert decide(Evidence(champion, good, 120), POLICY).verdict is Verdict.PROMOTE
    worse = decide(Evidence(champion, bad, 120), POLICY)
    assert worse.verdict is Verdict.ABORT
    assert "live rmse 11.000 > 10.500" in worse.reason


def test_it_waits_for_requests_then_for_time_and_aborts_when_time_runs_out() -> None:
    few = replace(AS_GOOD, requests=40)
    waiting = decide(evidence(few, elapsed=500), POLICY)
    assert (waiting.verdict, waiting.reason) == (
        Verdict.WAIT,
        "40 of 100 requests reached v2 (CANARY_MIN_REQUESTS)",
    )
    # Even a clearly worse figure waits for the minimum evidence.
    assert decide(evidence(replace(few, quality=0.1)), POLICY).verdict is Verdict.WAIT
    timed_out = decide(evidence(few, elapsed=600), POLICY)
    assert timed_out.verdict is Verdict.ABORT
    assert "only 40 of 100 requests reached v2 in 600s (CANARY_MAX_SECONDS 600)" in (
        timed_out.reason
    )
    early = decide(evidence(AS_GOOD, elapsed=30), POLICY)
    assert (early.verdict, early.reason) == (
        Verdict.WAIT,
        "no worse so far; 30s of CANARY_MIN_SECONDS 60",
    )


def test_missing_figures_are_unknown_not_held_against_the_challenger() -> None:
    bare = VersionFigures("2", requests=150)
    decision = decide(evidence(bare), POLICY)
    assert decision.verdict is Verdict.PROMOTE
    outcomes = {check.name: check.outcome for check in decision.checks}
    assert outcomes == {
        "error_rate": "ok",
        "p95_latency": "unknown",
        "live_quality": "unknown",
        "drift": "unknown",
    }
    few_labels = decide(evidence(replace(AS_GOOD, quality=0.1, quality_rows=10)), POLICY)
    assert few_labels.verdict is Verdict.PROMOTE


# --- the registry's partial states ---------------------------------------------------------


def registered(aliases: dict[str, str], tag: CanaryConfig | None) -> SimpleNamespace:
    """A registered model as MLflow returns it (aliases and tags)."""
    tags = {canary_tag("challenger"): tag.to_tag()} if tag else {}
    return SimpleNamespace(aliases=aliases, tags=tags)


@pytest.mark.parametrize(
    ("aliases", "tag_version", "challenger"),
    [
        ({"production": "1", "challenger": "2"}, "2", "2"),  # started
        ({"production": "1"}, "2", None),  # mid-start: tag written, alias not yet
        ({"production": "1", "challenger": "3"}, "2", None),  # mid-replace: tag and alias differ
        ({"production": "1", "challenger": "2"}, None, None),  # mid-abort: alias, no tag
        ({"production": "2", "challenger": "2"}, "2", None),  # mid-promote: it is the champion
        ({"challenger": "2"}, "2", None),  # nothing served: no canary either
    ],
)
def test_every_state_between_two_registry_writes_reads_safely(
    aliases: dict[str, str], tag_version: str | None, challenger: str | None
) -> None:
    tag = CanaryConfig(version=tag_version, weight=10) if tag_version else None
    state = serving_of(registered(aliases, tag), "production", "challenger")
    assert state.champion == aliases.get("production")
    assert (state.canary.version if state.canary else None) == challenger
