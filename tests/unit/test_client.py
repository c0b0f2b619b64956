"""kubetune.client without a cluster: light to import, and the Study tune() would create."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubetune import spec as study_spec
from kubetune.client import (
    Categorical,
    Float,
    Int,
    KubetuneError,
    function_source,
    function_study,
    study_manifest,
)


def test_importing_the_client_loads_nothing_heavier_than_the_kubernetes_client() -> None:
    probe = (
        "import sys, kubernetes.client, kubernetes.config; before = set(sys.modules); "
        "import kubetune.client; "
        "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    added = set(out.stdout.split())
    assert added <= {
        "kubetune",
        "yaml",
        "statistics",
        "inspect",
        "textwrap",
        "fractions",
        "decimal",
        "numbers",
        "_decimal",
        "_statistics",
        "dis",
        "opcode",
        "_opcode",
        "tokenize",
        "token",
        "ast",
        "_ast",
    }, added


def objective(lr: float, layers: int, opt: str = "sgd") -> float:
    """A docstring, so the source is more than one line."""
    import math  # noqa: PLC0415 - imports inside the function: only its source travels

    return (math.log10(lr) + 2) ** 2 + layers * 0.1 + (opt == "adam") * 0.05


def test_tune_renders_a_study_the_operator_accepts_with_the_function_as_its_source() -> None:
    config_map, body = function_study(
        objective,
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "layers": Int(1, 4),
            "opt": Categorical(["sgd", "adam"]),
        },
        name="tune-objective",
        max_trials=8,
        parallelism=2,
    )
    parsed = study_spec.parse(body["spec"])  # what the operator would say about it
    assert [p.name for p in parsed.parameters] == ["lr", "layers", "opt"]
    assert parsed.objective is not None and parsed.objective.metric == "value"
    source = config_map["data"]["function.py"]
    assert source.startswith("def objective(lr: float")
    container = body["spec"]["trialTemplate"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["python", "-m", "kubetune.function"]
    assert not any("${" in arg for arg in container["command"])  # parameters travel as JSON


def test_tune_refuses_functions_whose_source_cannot_travel() -> None:
    with pytest.raises(KubetuneError, match="lambda"):
        function_source(lambda x: x)
    scale = 3.0

    def closure(x: float) -> float:
        return x * scale

    with pytest.raises(KubetuneError, match="scale"):
        function_source(closure)


def run_function(
    tmp_path: Path, source: str, params: dict[str, Any], *argv: str
) -> tuple[int, Any]:
    (tmp_path / "function.py").write_text(source)
    log = tmp_path / "termination-log"
    env = {
        **os.environ,
        "KUBETUNE_PARAMS": json.dumps(params),
        "KUBETUNE_TRIAL_NAME": "t-0",
        "KUBETUNE_TERMINATION_LOG": str(log),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "kubetune.function", str(tmp_path / "function.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, (json.loads(log.read_text()) if log.exists() else proc.stderr)


def test_a_trial_of_a_function_reports_what_it_returns(tmp_path: Path) -> None:
    source = function_source(objective)
    code, message = run_function(tmp_path, source, {"lr": 0.01, "layers": 2}, "objective")
    assert code == 0, message
    assert message["metrics"] == {"value": pytest.approx(0.2)}


def test_a_function_may_take_one_dict_report_steps_and_return_several_metrics(
    tmp_path: Path,
) -> None:
    source = (
        "def train(config):\n"
        "    from kubetune import trial\n"
        "    for step in range(3):\n"
        "        trial.report(step, loss=config['lr'] * (3 - step))\n"
        "    return {'loss': 0.5, 'acc': 0.9}\n"
    )
    code, message = run_function(tmp_path, source, {"lr": 1.0}, "train", "--metric=loss")
    assert code == 0, message
    assert message["step"] == 2 and message["metrics"] == {"loss": 0.5, "acc": 0.9}
    assert message["intermediate"]["loss"] == [[0, 3.0], [1, 2.0], [2, 0.5]]


def test_a_function_that_raises_or_returns_no_objective_fails_its_trial(tmp_path: Path) -> None:
    code, stderr = run_function(
        tmp_path, "def f(x):\n    raise ValueError('bad x')\n", {"x": 1}, "f"
    )
    assert code == 1 and "ValueError: bad x" in stderr
    code, stderr = run_function(tmp_path, "def f(x):\n    return {'acc': 1}\n", {"x": 1}, "f")
    assert code != 0 and "without 'value'" in stderr


def test_a_study_built_from_typed_parameters_is_one_the_operator_accepts() -> None:
    template = {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "t",
                        "image": "trainer",
                        "args": ["--lr=${params.lr}", "--w=${params.w}"],
                    }
                ],
            }
        }
    }
    body = study_manifest(
        "mlp",
        {
            "lr": Float(1e-4, 0.1, log=True),
            "w": Int(16, 128, step=16),
            "opt": {"categorical": {"choices": ["sgd"]}},
        },
        template,
        metric="val_loss",
        pruner="median",
        max_trials=6,
        parallelism=3,
    )
    parsed = study_spec.parse(body["spec"])
    assert parsed.parameter("lr").float is not None and parsed.parameter("lr").float.log
    assert parsed.parameter("w").int is not None and parsed.parameter("w").int.step == 16
    assert parsed.pruner.name == "median" and parsed.budget.parallelism == 3
