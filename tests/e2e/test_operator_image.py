"""The operator installed exactly as operator/Dockerfile installs it runs a Study to the end.

The other tests run the operator from the development environment, which has every
extra installed; a dependency the image lacks (scikit-learn for the importance, once)
is only found here. The image has no scikit-learn now that importance is PED-ANOVA,
and the operator must not need it. There is no Docker on the test machines, so the
test reads the Dockerfile and does what it says: the files its COPY lines copy, into a
fresh virtual environment, with its `pip install` line (wheels may come from pip's
cache).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Operator, Studies
from tests.e2e.test_search import QUICK, study

CACHE = (
    Path(
        os.environ.get("KUBETUNE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubetune"
    )
    / "image-venv"
)


def dockerfile_steps(path: Path) -> tuple[dict[str, str], str, list[tuple[list[str], str]], str]:
    """ARG defaults, WORKDIR, COPY (sources, destination) and the RUN line, joined."""
    args: dict[str, str] = {}
    workdir, copies, run = "/", [], ""
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        op, rest = words[0].upper(), words[1:]
        if op == "ARG":
            name, _, default = rest[0].partition("=")
            args[name] = default
        elif op == "WORKDIR":
            workdir = rest[0]
        elif op == "COPY":
            copies.append((rest[:-1], rest[-1]))
        elif op == "RUN":
            run = line.split(None, 1)[1]
    return args, workdir, copies, run


@pytest.fixture(scope="session")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of an environment installed as operator/Dockerfile installs one."""
    args, workdir, copies, run = dockerfile_steps(ROOT / "operator" / "Dockerfile")
    image = tmp_path_factory.mktemp("image")
    context = image / workdir.lstrip("/")
    context.mkdir(parents=True)
    for sources, dest in copies:
        target = context / dest
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(
                    src,
                    target,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
                )
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, target / src.name)
    # The environment outlives the session, keyed by what decides its dependencies (the
    # Dockerfile, pyproject.toml, this Python): the install below runs every time and
    # reinstalls the project from the copied sources, but finds the dependencies in
    # place (a minute saved). A changed dependency list gets a fresh environment.
    key = hashlib.sha256()
    for part in (ROOT / "operator" / "Dockerfile", ROOT / "pyproject.toml"):
        key.update(part.read_bytes())
    key.update(sys.version.encode())
    env_dir = CACHE / key.hexdigest()[:16] / "venv"
    if not (env_dir / "bin" / "python").exists():
        shutil.rmtree(env_dir.parent, ignore_errors=True)
        venv.create(env_dir, with_pip=True)
    installs = [c.strip() for c in run.split("&&") if c.strip().startswith("pip install")]
    assert installs, f"no pip install in the Dockerfile's RUN line: {run}"
    path = f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"
    for command in installs:
        # The Dockerfile's --no-cache-dir keeps the image small; here the cache only
        # saves downloading the same wheels again.
        command = command.replace("--no-cache-dir", "")
        subprocess.run(
            ["bash", "-c", command],
            cwd=context,
            env={**os.environ, **args, "PATH": path, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            check=True,
            capture_output=True,
        )
    return env_dir / "bin" / "python"


def test_the_operator_installed_as_the_image_installs_it_finishes_a_study_with_importance(
    image_python: Path, operator: Operator, studies: Studies
) -> None:
    where = subprocess.run(
        [
            image_python,
            "-c",
            "import importlib.util, kubetune; "
            "assert importlib.util.find_spec('sklearn') is None, 'scikit-learn in the image'; "
            "print(kubetune.__file__)",
        ],
        cwd=image_python.parent,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(image_python.parents[1])), "not the dev checkout"
    installed = Path(where.stdout.strip()).parent / "reconcile.py"
    assert installed.read_text() == (ROOT / "operator/kubetune/reconcile.py").read_text(), (
        "the environment runs this checkout's operator, not a cached one"
    )
    operator.stop()
    operator.python, operator.cwd = str(image_python), image_python.parent
    operator.env["PYTHONPATH"] = ""
    operator.start()
    body = study("image", QUICK, sampler={"name": "tpe", "seed": 2}, max_trials=6, parallelism=3)
    assert studies.apply(body).returncode == 0
    status = studies.wait_phase("image", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", operator.log_tail()
    assert set(status["importance"]) == {"x", "depth", "kind"}, operator.log_tail()
