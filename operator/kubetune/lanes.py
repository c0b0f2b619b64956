"""Where blocking work runs: one thread pool per kind of work.

Kubernetes writes, Prometheus reads and Events each have their own pool, so a
slow Prometheus or a burst of Events never delays a trial's creation. Samplers
run in two lanes: fast ones (TPE, random, QMC, CMA-ES, grid, NSGA-II: milliseconds
per ask) and slow ones (GP: up to seconds per ask), so a GP Study only ever waits
behind another GP Study. A Study's own sampler calls never overlap (its passes
are sequential). Importance refits (a random forest) run in the background lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from kubetune.spec import StudySpec

T = TypeVar("T")
SLOW_SAMPLERS = frozenset({"gp"})
# Worker processes run this much nicer than the operator. A GP fit is seconds of CPU;
# on a busy node (the 2-core bench machine, or a crowded operator pod) it competed for
# the same cores as every other Study's critical path, which is what slowed a TPE
# Study beside a GP one. Lower priority makes the GP Study wait for CPU, not the others.
# Raising niceness needs no privilege.
WORKER_NICENESS = 10


class Lanes:
    def __init__(self, io_workers: int = 16) -> None:
        # Creating the next trials never queues behind the background writes (results,
        # Study status, Job removals), which a wave of trials ending at once makes many.
        self.critical = ThreadPoolExecutor(8, thread_name_prefix="kube-create")
        self.io = ThreadPoolExecutor(io_workers, thread_name_prefix="kube")
        self.prometheus = ThreadPoolExecutor(4, thread_name_prefix="prometheus")
        self.events = ThreadPoolExecutor(2, thread_name_prefix="events")
        self.fast = ThreadPoolExecutor(4, thread_name_prefix="sampler")
        self.slow = ThreadPoolExecutor(2, thread_name_prefix="sampler-slow")
        # Importance refits hold the GIL while they compute, which the event loop and the
        # I/O threads need, and `optuna.importance` imports scikit-learn and SciPy where
        # installed (~100 MiB): a process of its own (spawned lazily, not forked from this
        # threaded one).
        self.background = _worker_process()
        # GP proposals likewise (sampling.propose): a fit is up to seconds of CPU.
        self.remote = _worker_process()

    def sampler(self, spec: StudySpec) -> ThreadPoolExecutor:
        slow = spec.sampler.name in SLOW_SAMPLERS
        return self.slow if slow else self.fast

    async def run(self, pool: Executor, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(fn, *args))

    def shutdown(self) -> None:
        pools: tuple[Executor, ...] = (self.critical, self.io, self.prometheus, self.events)
        for pool in (*pools, self.fast, self.slow, self.background, self.remote):
            pool.shutdown(wait=False, cancel_futures=True)


class CreatesFirst:
    """Background Kubernetes writes give way to trial creation.

    When trials end together, each pass records results, deletes Jobs, writes the
    Study's status and creates the next trials, and on a busy API server all those
    requests share its CPU: the creates, which decide how long GPUs sit idle, were
    measured taking 40-300 ms instead of ~20. Creates hold the gate while they are
    planned and in flight; background writes wait for it to open, but never longer
    than `limit` seconds, so a Study that always creates cannot starve them.
    """

    def __init__(self, limit: float = 0.25) -> None:
        self.limit = limit
        self.holds = 0
        # Futures of the running loop, not an asyncio.Event: an Event binds to the
        # first loop that waits on it, and the gate is made before any loop runs.
        self.waiters: list[asyncio.Future[None]] = []

    def hold(self) -> None:
        self.holds += 1

    def release(self) -> None:
        self.holds = max(0, self.holds - 1)
        if self.holds == 0:
            waiters, self.waiters = self.waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def wait(self) -> None:
        if not self.holds:
            return
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(opened)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(opened, self.limit)
        if opened in self.waiters:  # timed out: nothing will resolve it now
            self.waiters.remove(opened)


def _worker_process() -> ProcessPoolExecutor:
    """One spawned worker process that ends when the operator does, however it ends."""
    return ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), WORKER_NICENESS),
    )


def _start_worker(parent: int, niceness: int = 0) -> None:
    """In the worker: lower CPU priority, and an exit once the operator is gone.

    A SIGKILLed operator cannot shut its pools down, and its workers (~150 MB each)
    would live on as orphans; in a container they die with the pod, but
    not under a process supervisor or on the local node (the chaos suite leaked dozens).
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    os.nice(niceness)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
