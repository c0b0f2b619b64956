"""The tuning playbook as Study options: repeats, boundaries, importance, warm start, deadlines."""

from __future__ import annotations

import textwrap
from typing import Any

from tests.conftest import wait_for
from tests.e2e.conftest import Operator, Studies
from tests.e2e.test_search import study

# score grows with x (so the best sits at the high edge) plus a little seed noise.
EDGE = textwrap.dedent(
    """
    import os
    from kubetune import trial
    p = trial.params()
    noise = (trial.seed() % 7) / 1000
    trial.report(1, score=p["x"] - abs(p["depth"] - 3) / 10 + noise)
    """
)


def test_repeats_boundary_and_importance(operator: Operator, studies: Studies) -> None:
    s = study("edge", EDGE, sampler={"name": "random", "seed": 3}, max_trials=10, parallelism=4)
    s["spec"]["repeatBest"] = {"count": 2}
    assert studies.apply(s).returncode == 0
    status = studies.wait_phase("edge", "Succeeded", "Failed", timeout=120)
    assert status["phase"] == "Succeeded", operator.log_tail()
    trials = studies.trials("edge")
    search = [t for t in trials if t["spec"]["source"] != "repeat"]
    repeats = [t for t in trials if t["spec"]["source"] == "repeat"]
    assert len(search) == 10 and len(repeats) == 2
    best = status["repeatBest"]["trial"]
    best_params = next(t["spec"]["params"] for t in search if t["metadata"]["name"] == best)
    assert all(r["spec"]["params"] == best_params for r in repeats)
    assert len({t["spec"]["seed"] for t in trials}) == len(trials), "every trial its own seed"
    rb = status["repeatBest"]
    assert len(rb["values"]) == 3
    assert abs(rb["mean"] - sum(rb["values"]) / 3) < 1e-9
    assert status["bestTrial"]["value"] == rb["mean"]
    assert status["sampler"]["learnedTrials"] == 10, "repeats are not search history"
    boundary = next(c for c in status["conditions"] if c["type"] == "SearchSpaceBoundary")
    if best_params["x"] >= 0.95:
        assert boundary["status"] == "True"
        assert "x: the best values are at the high edge (1.0)" in boundary["message"]
    assert set(status["importance"]) == {"x", "depth", "kind"}


def test_warm_start_and_enqueued_configurations(operator: Operator, studies: Studies) -> None:
    first = study("first", EDGE, sampler={"name": "random", "seed": 1}, max_trials=4, parallelism=4)
    studies.apply(first)
    assert studies.wait_phase("first", "Succeeded")["phase"] == "Succeeded"
    pinned: dict[str, Any] = {"x": 0.5, "depth": 3, "kind": "b"}
    second = study("second", EDGE, sampler={"name": "tpe", "seed": 1}, max_trials=5, parallelism=1)
    second["spec"]["warmStart"] = {"fromStudy": "first"}
    second["spec"]["enqueue"] = [pinned]
    studies.apply(second)

    def started() -> tuple[bool, Any]:
        return len(studies.trials("second")) >= 1, studies.trials("second")

    wait_for(started, 60, "the warm-started Study to start")
    # Its snapshot of the source is what a restart learns from: the source can go.
    studies.cluster.kubectl("delete", "study", "first", "-n", studies.namespace)
    operator.kill()
    operator.start()
    status = studies.wait_phase("second", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", operator.log_tail()
    assert operator.log.read_text().count("(4 warm-start)") == 2, "rebuilt after the restart"
    trials = studies.trials("second")
    assert trials[0]["spec"]["params"] == pinned
    assert trials[0]["spec"]["source"] == "enqueued"
    assert status["sampler"]["learnedTrials"] == 5, "warm-start trials are not this Study's"
    assert "4 warm-start" in operator.log.read_text()
    missing = study("orphan", EDGE, sampler={"name": "tpe"}, max_trials=2, parallelism=1)
    missing["spec"]["warmStart"] = {"fromStudy": "nowhere"}
    studies.apply(missing)
    invalid = studies.wait_phase("orphan", "Failed", timeout=30)
    cond = next(c for c in invalid["conditions"] if c["type"] == "Invalid")
    assert "spec.warmStart.fromStudy: 'nowhere' is not a Study" in cond["message"]


def test_timeout_stops_running_trials_and_intermediate_nan_is_diverged(
    operator: Operator, studies: Studies
) -> None:
    slow = "import time\nfrom kubetune import trial\ntrial.report(1, score=0.5)\ntime.sleep(300)\n"
    s = study(
        "late",
        slow,
        sampler={"name": "random", "seed": 1},
        max_trials=4,
        parallelism=2,
        budget={"timeout": "12s"},
    )
    studies.apply(s)
    nan = textwrap.dedent(
        """
        import time
        from kubetune import trial
        trial.report(1, score=float("nan"))
        time.sleep(300)
        """
    )
    studies.apply(
        study("nan", nan, sampler={"name": "random", "seed": 1}, max_trials=1, parallelism=1)
    )
    status = studies.wait_phase("late", "Succeeded", "Failed", timeout=60)
    assert status["budget"]["exhaustedBy"] == "timeout"
    stopped = [t["status"] for t in studies.trials("late")]
    assert {s["reason"] for s in stopped} == {"DeadlineExceeded"}
    # Nothing completed before the deadline, so the Study has no result: Failed.
    assert status["phase"] == "Failed"
    diverged = studies.wait_phase("nan", "Succeeded", "Failed", timeout=60)
    (t,) = studies.trials("nan")
    assert t["status"]["reason"] == "Diverged"
    assert "at step 1" in t["status"]["message"], "stopped mid-run, not at its end"
    assert diverged["trials"]["diverged"] == 1
