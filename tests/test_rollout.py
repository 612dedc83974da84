"""pipelines.ops.rollout: guardrails, traffic split, canary actions on a real registry, the ramp loop, CLI."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.config import Params
from pipelines.contract import CHALLENGER, CHAMPION
from pipelines.ops.guardrails import ArmStats, arm_stats, evaluate_step, psi
from pipelines.ops.rollout import (
    CanaryError,
    CanaryRolledBack,
    live_stats,
    pause_canary,
    promote_challenger,
    rollback_canary,
    run_canary,
    start_canary,
)
from pipelines.sections import GuardrailParams, RegisterParams
from tests.conftest import make_project

G = GuardrailParams()  # seed defaults: 2% errors, 2x champion, p99 250 ms, PSI 0.25
RNG = np.random.default_rng(0)


def _arm(n: int, errors: int = 0, p99: float = 20.0, scores: np.ndarray | None = None) -> ArmStats:
    s = RNG.beta(1, 20, size=n - errors) if scores is None else scores
    return ArmStats(n=n, errors=errors, p99_ms=p99, scores=s)


# ---- pure core -------------------------------------------------------------------------------------


@pytest.mark.unit
def test_breach_on_ten_percent_errors() -> None:
    d = evaluate_step({CHAMPION: _arm(2000), CHALLENGER: _arm(300, errors=30)}, G, min_requests=200)
    assert d.action == "rollback" and "error rate 10.00% > 2.00%" in d.reason


@pytest.mark.unit
def test_breach_on_ratio_vs_champion() -> None:
    # 1.5% is under the absolute 2% but 3x the champion's 0.5%
    d = evaluate_step({CHAMPION: _arm(2000, errors=10), CHALLENGER: _arm(400, errors=6)}, G, 200)
    assert d.action == "rollback" and "x champion's" in d.reason


@pytest.mark.unit
def test_breach_on_ten_x_latency() -> None:
    g = GuardrailParams(p99_budget_ms=100, max_p99_ratio_vs_champion=3.0)
    d = evaluate_step({CHAMPION: _arm(2000, p99=30.0), CHALLENGER: _arm(300, p99=300.0)}, g, 200)
    assert d.action == "rollback"
    assert "p99 300.0 ms > budget 100 ms" in d.reason and "3x champion's 30.0 ms" in d.reason


@pytest.mark.unit
def test_breach_on_score_shift() -> None:
    shifted = RNG.beta(5, 2, size=300)  # a challenger that calls everything fraud
    d = evaluate_step({CHAMPION: _arm(2000), CHALLENGER: _arm(300, scores=shifted)}, G, 200)
    assert d.action == "rollback" and "PSI" in d.reason and d.figures["psi"] > 0.25


@pytest.mark.unit
def test_wait_when_too_few_requests() -> None:
    # 1 error out of 3 is 33%, but no decision on 3 requests
    d = evaluate_step({CHAMPION: _arm(2000), CHALLENGER: _arm(3, errors=1)}, G, min_requests=200)
    assert d.action == "wait" and "3 requests" in d.reason


@pytest.mark.unit
def test_advance_when_healthy_and_hold_before() -> None:
    stats = {CHAMPION: _arm(2000), CHALLENGER: _arm(300)}
    assert evaluate_step(stats, G, 200, held_s=5, hold_s=60).action == "hold"
    d = evaluate_step(stats, G, 200, held_s=60, hold_s=60)
    assert d.action == "advance" and d.figures["psi"] < 0.25
    # at 100% the champion has no traffic: comparisons are skipped, absolute guardrails still apply
    assert evaluate_step({CHAMPION: ArmStats(), CHALLENGER: _arm(300)}, G, 200).action == "advance"


@pytest.mark.unit
def test_psi() -> None:
    a = RNG.normal(size=5000)
    assert psi(a, RNG.normal(size=5000)) < 0.02
    assert psi(a, RNG.normal(loc=1.0, size=5000)) > 0.25
    assert np.isnan(psi(a, np.empty(0)))


def _log_rows(t0: dt.datetime) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for i in range(100):
        arm, fallback, version, lat = CHAMPION, False, "1", 10.0
        if i % 4 == 0:  # routed to the challenger
            arm, version, lat = CHALLENGER, "2", 12.0
            if i % 20 == 0:  # failed: the champion answered after the timeout
                arm, fallback, version, lat = CHAMPION, True, "1", 200.0
        rows.append(
            {
                "served_at": (t0 + dt.timedelta(seconds=i)).isoformat(),
                "event_id": f"e{i}",
                "arm": arm,
                "challenger_fallback": fallback,
                "model_version": version,
                "latency_ms": lat,
                "score": 0.9 if i % 10 == 0 else 0.1,
                "decision": i % 3 == 0,
            }
        )
    # a row of an older challenger (previous canary) is ignored
    rows.append({**rows[4], "model_version": "9", "event_id": "old"})
    return pd.DataFrame(rows)


@pytest.mark.unit
def test_arm_stats_from_log_rows() -> None:
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    labels = pd.DataFrame(
        {"event_id": [f"e{i}" for i in range(100)], "label": [int(i % 6 == 0) for i in range(100)]}
    )
    stats = arm_stats(_log_rows(t0), labels=labels, challenger_version="2")
    ch, cp = stats[CHALLENGER], stats[CHAMPION]
    assert (ch.n, ch.errors, cp.n, cp.errors) == (25, 5, 75, 0)
    assert ch.error_rate == pytest.approx(0.2) and len(ch.scores) == 20
    assert ch.p99_ms > 190 and cp.p99_ms == pytest.approx(10.0)
    assert ch.labelled == 20 and ch.precision == ch.recall == 1.0 and cp.recall is not None
    later = arm_stats(_log_rows(t0), since=t0 + dt.timedelta(seconds=50), challenger_version="2")
    assert later[CHALLENGER].n + later[CHAMPION].n == 50
    assert arm_stats(pd.DataFrame())[CHALLENGER].n == 0


@pytest.mark.unit
def test_traffic_split_share_and_sticky() -> None:
    """Serving's own router: over 10,000 entities the share is within 2 points and an entity keeps its arm."""
    from pipelines.serving import route

    entities = [f"entity-{i}" for i in range(10_000)]
    before: set[str] = set()
    for weight in (5, 20, 50, 100):
        arms = [route(e, weight) for e in entities]
        share = 100 * arms.count(CHALLENGER) / len(arms)
        assert abs(share - weight) <= 2, (weight, share)
        assert arms == [route(e, weight) for e in entities]  # sticky while the weight stays
        now = {e for e, a in zip(entities, arms, strict=True) if a == CHALLENGER}
        assert before <= now  # ramping up only moves entities to the challenger
        before = now
    assert all(route(e, 0) == CHAMPION for e in entities)


# ---- actions on a real registry ------------------------------------------------------------------------

_names = itertools.count()


@pytest.fixture(scope="module")
def base_project(tmp_path_factory: pytest.TempPathFactory) -> Params:
    return make_project(
        tmp_path_factory.mktemp("rollout") / "project",
        {"rollout": {"hold_s": 0, "min_requests": 50, "poll_s": 1, "max_wait_s": 5}},
    )


@pytest.fixture
def params(base_project: Params) -> Params:
    """The module's project with its own model name: 3 versions, v1 champion, v2 challenger."""
    from pipelines.engines.registry import open_registry

    p = base_project.model_copy(update={"register_": RegisterParams(model_name=f"m{next(_names)}")})
    reg = open_registry(p)
    name = p.register_.model_name
    reg.ensure_model(name)
    for _ in range(3):
        reg.client.create_model_version(name, source="file:///nonexistent", run_id=None)
    reg.move_alias(name, "champion", "1", why="bootstrap")
    reg.move_alias(name, "challenger", "2", why="passed offline gates")
    return p


def _reg(p: Params) -> Any:
    from pipelines.engines.registry import open_registry

    return open_registry(p)


@pytest.mark.integration
def test_start_rollback_restores_champion_and_records(params: Params) -> None:
    reg, name = _reg(params), params.register_.model_name
    assert start_canary(params, reg) == {"challenger": "2", "step": 0, "weight": 5.0}
    state = reg.get_rollout_state(name)
    assert state.challenger_weight == 5.0 and state.started_at and state.decision.startswith("running")

    rollback_canary(params, "p99 over budget", reg, who="dag")
    state = reg.get_rollout_state(name)
    assert state.challenger_weight == 0.0 and "p99 over budget" in state.decision
    assert reg.aliases(name) == {"champion": "1"}
    last = reg.history(name)[-1]
    assert (last.alias, last.version, last.previous, last.who) == ("challenger", None, "2", "dag")
    assert "p99 over budget" in last.why
    with pytest.raises(CanaryError, match="no `challenger`"):
        start_canary(params, reg)


@pytest.mark.integration
def test_promote_then_rollback_in_one_call_history_lists_every_move(params: Params) -> None:
    reg, name = _reg(params), params.register_.model_name
    start_canary(params, reg)
    assert promote_challenger(params, reg, why="canary ok") == {"champion": "2", "previous": "1"}
    assert reg.aliases(name) == {"champion": "2", "previous": "1"}
    assert reg.get_rollout_state(name).challenger_weight == 0.0

    # `sluice rollback` is one call: champion <- previous
    reg.promote(name, reg.alias_version(name, "previous"), why="rollback: alerts")
    assert reg.alias_version(name, "champion") == "1" and reg.alias_version(name, "previous") == "2"
    moves = [(m.alias, m.previous, m.version) for m in reg.history(name)]
    assert moves == [
        ("champion", None, "1"),
        ("challenger", None, "2"),
        ("previous", None, "1"),
        ("champion", "1", "2"),
        ("challenger", "2", None),
        ("previous", "1", "2"),
        ("champion", "2", "1"),
    ]
    assert all(m.who and m.when and m.why for m in reg.history(name))


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def sleep(self, s: float) -> None:
        self.t += s

    def __call__(self) -> float:
        return self.t


@pytest.mark.integration
def test_run_canary_healthy_ramps_and_promotes(params: Params) -> None:
    reg, name = _reg(params), params.register_.model_name
    weights: list[float] = []

    def healthy(since: dt.datetime, version: str) -> dict[str, ArmStats]:
        weights.append(reg.get_rollout_state(name).challenger_weight)
        return {CHAMPION: _arm(1000), CHALLENGER: _arm(100)}

    clock = _Clock()
    out = run_canary(params, reg, stats_fn=healthy, sleep=clock.sleep, clock=clock)
    assert out["champion"] == "2" and [s["weight"] for s in out["steps"]] == [5, 20, 50, 100]
    assert sorted(set(weights)) == [5, 20, 50, 100]
    assert reg.aliases(name) == {"champion": "2", "previous": "1"}
    assert reg.get_rollout_state(name).decision.startswith("promoted")


@pytest.mark.integration
def test_run_canary_breach_rolls_back_within_one_step(params: Params) -> None:
    reg, name = _reg(params), params.register_.model_name
    clock = _Clock()

    def bad(since: dt.datetime, version: str) -> dict[str, ArmStats]:
        return {CHAMPION: _arm(1000), CHALLENGER: _arm(100, errors=10)}

    with pytest.raises(CanaryRolledBack, match=r"step 0 \(5%\).*error rate 10.00%"):
        run_canary(params, reg, stats_fn=bad, sleep=clock.sleep, clock=clock)
    assert clock.t == params.rollout.poll_s  # decided at the first poll with enough traffic
    assert reg.aliases(name) == {"champion": "1"}
    assert reg.get_rollout_state(name).challenger_weight == 0.0


@pytest.mark.integration
def test_run_canary_without_traffic_rolls_back_after_max_wait(params: Params) -> None:
    reg, name = _reg(params), params.register_.model_name
    clock = _Clock()
    with pytest.raises(CanaryRolledBack, match="not enough traffic"):
        run_canary(params, reg, stats_fn=lambda s, v: {}, sleep=clock.sleep, clock=clock)
    assert params.rollout.max_wait_s < clock.t <= params.rollout.max_wait_s + params.rollout.poll_s
    assert reg.alias_version(name, "challenger") is None


@pytest.mark.integration
def test_live_stats_reads_the_prediction_log(params: Params) -> None:
    from pipelines.serving.log import PredictionLogWriter

    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    rows = _log_rows(dt.datetime.now(dt.UTC)).to_dict("records")
    writer = PredictionLogWriter(Path(params.paths.prediction_log), rotate_bytes=1 << 20, flush_s=0.05)
    writer.write_many(rows)
    writer.flush()
    writer.close()
    stats = live_stats(params, t0, challenger_version="2")
    assert (stats[CHALLENGER].n, stats[CHALLENGER].errors) == (25, 5)


@pytest.mark.integration
def test_cli_canary_start_pause_abort(params: Params, tmp_path: Path) -> None:
    from pipelines.ops.cli import app

    name = params.register_.model_name
    params_file = (
        make_project(
            tmp_path / "cli",
            {"register": {"model_name": name}, "mlflow": {"tracking_uri": params.tracking_uri}},
        ).root
        / "params.yaml"
    )
    runner = CliRunner()
    args = ["--params", str(params_file)]
    reg = _reg(params)

    out = runner.invoke(app, ["canary", "start", *args])
    assert out.exit_code == 0, out.output
    assert reg.get_rollout_state(name).challenger_weight == 5.0
    out = runner.invoke(app, ["canary", "pause", "--reason", "holiday", *args])
    assert out.exit_code == 0, out.output
    assert reg.get_rollout_state(name).decision == "paused: v2 at 5% (holiday)"
    out = runner.invoke(app, ["canary", "start", *args])  # resume at the same step
    assert out.exit_code == 0 and reg.get_rollout_state(name).challenger_weight == 5.0
    out = runner.invoke(app, ["canary", "abort", "--reason", "bad feeling", *args])
    assert out.exit_code == 0, out.output
    assert reg.aliases(name) == {"champion": "1"}
    assert "aborted: bad feeling" in reg.get_rollout_state(name).decision
    out = runner.invoke(app, ["canary", "start", *args])
    assert out.exit_code == 1 and "no `challenger`" in out.output
    out = runner.invoke(app, ["status", *args])
    assert "weight=0%" in out.output and "aborted: bad feeling" in out.output
    with pytest.raises(CanaryError):
        pause_canary(params, reg)


@pytest.mark.integration
def test_restarted_canary_resumes_at_registry_step_and_pause_freezes_ramp(params: Params) -> None:
    from pipelines.ops.rollout import set_step

    reg, name = _reg(params), params.register_.model_name
    start_canary(params, reg)
    set_step(params, 2, reg)  # the DAG task died at 50%; its retry resumes there, not at 5%
    assert start_canary(params, reg)["weight"] == 50.0

    pause_canary(params, reg, why="investigating")
    clock = _Clock()
    seen: list[float] = []

    def healthy(since: dt.datetime, version: str) -> dict[str, ArmStats]:
        seen.append(reg.get_rollout_state(name).challenger_weight)
        if len(seen) == 5:  # an operator aborts while paused
            rollback_canary(params, "aborted: enough", reg)
        return {CHAMPION: _arm(1000), CHALLENGER: _arm(100)}

    with pytest.raises(CanaryRolledBack, match="aborted"):
        run_canary(params, reg, stats_fn=healthy, sleep=clock.sleep, clock=clock)
    assert set(seen) == {50.0}  # paused: held at 50% while healthy, never advanced


@pytest.mark.integration
def test_resume_starts_at_first_step_at_or_above_the_registry_weight(params: Params) -> None:
    from pipelines.ops.rollout import step_at_least

    assert [step_at_least([5, 20, 50, 100], w) for w in (0.5, 5, 20, 30, 100)] == [0, 0, 1, 2, 3]
    reg, name = _reg(params), params.register_.model_name
    # a weight written outside the ramp (a deploy, by hand) with a stale step: never back to 5%
    reg.set_rollout_state(name, challenger_weight=30.0, step=0, decision="running: v2 at 30% (by hand)")
    assert start_canary(params, reg) == {"challenger": "2", "step": 2, "weight": 50.0}
