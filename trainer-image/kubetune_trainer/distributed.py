"""Data-parallel training across a trial's pods (torch.distributed: gloo on CPU, NCCL on GPU).

The world comes from the environment, as torchrun reads it: WORLD_SIZE, RANK,
MASTER_ADDR, MASTER_PORT. A JobSet's pods set them in their template (RANK may be left
to the Job's JOB_COMPLETION_INDEX); a Kubeflow TrainJob's torch runtime sets PET_NNODES,
PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT, read when the others are absent.
One process per pod. Rank 0 evaluates, reports the trial's metrics and checkpoints.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed import TCPStore  # type: ignore[attr-defined]

DEFAULT_PORT = 29500
_SERVING: list[socket.socket] = []  # rank 0's listening socket lives as long as the store
_STORES: list[TCPStore] = []


class WorldError(ValueError):
    """The environment describes no usable world (a clear message for the trial's log)."""


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    master_addr: str
    master_port: int

    @property
    def leader(self) -> bool:
        return self.rank == 0


def _first(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[n] for n in names if env.get(n, "").strip()), None)


def world_from_env(env: Mapping[str, str] | None = None) -> World | None:
    """The data-parallel world this process belongs to; None when it runs alone."""
    env = os.environ if env is None else env
    size_text = _first(env, "WORLD_SIZE", "PET_NNODES")
    if size_text is None:
        return None
    try:
        size = int(size_text)
        rank = int(_first(env, "RANK", "JOB_COMPLETION_INDEX", "PET_NODE_RANK") or "0")
        port = int(_first(env, "MASTER_PORT", "PET_MASTER_PORT") or DEFAULT_PORT)
    except ValueError as e:
        raise WorldError(f"WORLD_SIZE, RANK and MASTER_PORT must be integers: {e}") from None
    if size <= 1:
        return None
    if not 0 <= rank < size:
        raise WorldError(f"RANK {rank} is outside a world of {size}")
    addr = _first(env, "MASTER_ADDR", "PET_MASTER_ADDR")
    if addr is None:
        raise WorldError(f"a world of {size} needs MASTER_ADDR (rank 0's host name)")
    return World(rank, size, addr, port)


def resolve(name: str, timeout: float) -> str:
    """`name`'s address, waiting for it to appear: a peer's name resolves once its pod
    has an address, which may be after this pod started."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0])
        except socket.gaierror:
            if time.monotonic() > deadline:
                raise WorldError(
                    f"MASTER_ADDR {name!r} did not resolve within {timeout:.0f} s"
                ) from None
            time.sleep(0.2)


def init(world: World, device: torch.device, timeout: float = 300.0) -> None:
    """Join the world. Rank 0 serves the rendezvous store on its own address only, not
    on all of them: pods that share a host's network (the local node) can then each
    serve on the same MASTER_PORT."""
    addr = resolve(world.master_addr, timeout)
    wait = datetime.timedelta(seconds=timeout)
    if world.leader:
        server = socket.create_server((addr, world.master_port))
        _SERVING.append(server)
        store = TCPStore(
            addr, world.master_port, world.size, True, wait, master_listen_fd=server.fileno()
        )
    else:
        store = TCPStore(addr, world.master_port, world.size, False, wait)
    _STORES.append(store)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=store, rank=world.rank, world_size=world.size)


def finish(world: World, timeout: float = 60.0) -> None:
    """Leave the world together, after a complete run: every rank passes a barrier, and
    rank 0, which serves the rendezvous store, leaves last (a rank whose store vanished
    while it was shutting down its process group would abort)."""
    store = _STORES[-1]
    dist.barrier()
    dist.destroy_process_group()
    if not world.leader:
        store.add("left", 1)
        return
    deadline = time.monotonic() + timeout
    while store.add("left", 0) < world.size - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
