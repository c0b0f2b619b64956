"""Data-parallel training: the world from a JobSet's or TrainJob's environment, and two
real ranks (gloo) on this machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kubetune_trainer.distributed import World, WorldError, world_from_env


def test_the_world_comes_from_torchrun_or_trainjob_variables() -> None:
    assert world_from_env({}) is None
    assert world_from_env({"WORLD_SIZE": "1"}) is None, "one process: no world"
    # A JobSet's Indexed Job: RANK may be left to JOB_COMPLETION_INDEX.
    env = {"WORLD_SIZE": "2", "JOB_COMPLETION_INDEX": "1", "MASTER_ADDR": "t-w-0-0.t"}
    assert world_from_env(env) == World(1, 2, "t-w-0-0.t", 29500)
    # Kubeflow Trainer's torch runtime.
    env = {"PET_NNODES": "4", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "m", "PET_MASTER_PORT": "7"}
    assert world_from_env(env) == World(0, 4, "m", 7)
    with pytest.raises(WorldError, match="needs MASTER_ADDR"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(WorldError, match="RANK 2 is outside a world of 2"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "m"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(180)
def test_two_ranks_train_one_model_and_rank_0_alone_reports(tmp_path: Path) -> None:
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "MASTER_ADDR": "localhost",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "KUBETUNE_METRICS_PORT": "0",
            "KUBETUNE_TERMINATION_LOG": str(tmp_path / f"rank{rank}"),
        }
        argv = [sys.executable, "-m", "kubetune_trainer", "--dataset=digits", "--epochs=3"]
        argv += ["--lr=0.05", "--batch-size=64"]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=170)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    result = json.loads((tmp_path / "rank0").read_text())
    assert result["step"] == 3
    assert result["metrics"]["val_accuracy"] > 0.8, result["metrics"]
    assert not (tmp_path / "rank1").exists(), "rank 1 reports nothing"
    assert "rank 1/2" in outs[1] and "epoch 1:" not in outs[1], outs[1]
