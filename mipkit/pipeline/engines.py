"""Run shard tasks: in this process, in a local process pool, or as Ray tasks.

Every build hands its own shard function to ``run_shards``; the function must accept
``(task, *args, on_event=callable)``, commit its shard and return the shard's stats dict.
``on_event`` streams progress from inside a shard (in-process and pool engines); Ray reports
each shard once it finishes, through ``on_done``.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from mipkit.core.errors import MipkitError

ENGINES = ("local", "ray")

ShardFn = Callable[..., dict]
OnEvent = Callable[[Any], None]
OnDone = Callable[[Any, dict, bool], None]  # (task, stats, progress_was_streamed)


def _pool_call(shard_fn: ShardFn, task, args: tuple, events) -> dict:
    return shard_fn(task, *args, on_event=events.put)


def _describe(task) -> str:
    return f"shard {getattr(task, 'index', '?')}"


def run_shards(
    tasks: Sequence,
    shard_fn: ShardFn,
    args: tuple,
    *,
    workers: int = 1,
    engine: str = "local",
    on_event: OnEvent | None = None,
    on_done: OnDone | None = None,
    describe: Callable[[Any], str] = _describe,
    num_gpus: float = 0,
) -> list[str]:
    """Run every task; an exception in one shard is reported in the returned list, the rest go on.
    ``num_gpus``: GPUs each Ray task holds (Ray places it on a node that has them)."""
    if engine not in ENGINES:
        raise MipkitError(f"--engine {engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    on_event = on_event or (lambda event: None)
    on_done = on_done or (lambda task, stats, streamed: None)
    if engine == "ray":
        return _run_ray(tasks, shard_fn, args, workers, on_done, describe, num_gpus)
    errors: list[str] = []
    if workers <= 1:
        for task in tasks:
            try:
                stats = shard_fn(task, *args, on_event=on_event)
            except Exception as exc:  # noqa: BLE001 - a bug in one shard must not lose the others
                errors.append(f"{describe(task)}: {type(exc).__name__}: {exc}")
                continue
            on_done(task, stats, True)
        return errors
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent (progress bar, server)
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        events = manager.Queue()
        futures = {pool.submit(_pool_call, shard_fn, task, args, events): task for task in tasks}
        try:
            _drain(futures, events, on_event, on_done, describe, errors)
        except KeyboardInterrupt:
            # Leaving the `with` would wait for every queued shard: cancel them and stop the workers.
            workers_running = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in workers_running:
                process.terminate()
            raise
    return errors


def _drain(futures: dict, events, on_event: OnEvent, on_done: OnDone, describe, errors: list[str]) -> None:
    """Forward progress events and finished shards until every future is done."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        while True:
            try:
                on_event(events.get_nowait())
            except queue_module.Empty:
                break
        for future in done:
            task = futures[future]
            if future.exception() is not None:
                errors.append(f"{describe(task)}: {type(future.exception()).__name__}: {future.exception()}")
            else:
                on_done(task, future.result(), True)
    return errors


# A task whose node dies is run again elsewhere; its shard was not committed, so it is redone whole.
RAY_MAX_RETRIES = 3


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MipkitError("--engine ray needs Ray: pip install 'ray>=2.40'") from None
    return ray


def _connect_ray(workers: int, address: str | None) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local instance; True if started here."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = {"log_to_driver": False, "configure_logging": False}
    if address:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:
            raise MipkitError(
                f"--ray-address {address!r}: no Ray cluster answers there ({exc}); start one with `ray start --head` or fix the address"
            ) from None
    else:
        # "local": a private instance, never a cluster that happens to run on this machine
        ray.init(address="local", num_cpus=max(workers, 1), include_dashboard=False, **quiet)
    return True


@contextmanager
def engine_session(engine: str, workers: int = 1, ray_address: str | None = None) -> Iterator[int]:
    """Start (or join) what ``engine`` needs for a whole build; yields the number of nodes that will work."""
    if engine != "ray":
        yield 1
        return
    started_here = _connect_ray(workers, ray_address)
    ray = _import_ray()
    try:
        yield sum(1 for node in ray.nodes() if node.get("Alive"))
    finally:
        if started_here:
            ray.shutdown()


def check_ray_gpus(num_gpus: float) -> None:
    """A task asking for GPUs the cluster lacks would wait forever: refuse it before submitting."""
    if num_gpus <= 0:
        return
    total = _import_ray().cluster_resources().get("GPU", 0)
    if total < num_gpus:
        raise MipkitError(
            f"--num-gpus-per-task {num_gpus:g}: the Ray cluster has {total:g} GPU(s), so no task could start; "
            "join a cluster with GPU nodes, or leave --num-gpus-per-task away to label on CPUs"
        )


def _run_ray(
    tasks: Sequence, shard_fn: ShardFn, args: tuple, workers: int, on_done: OnDone, describe, num_gpus: float = 0
) -> list[str]:
    ray = _import_ray()
    started_here = _connect_ray(workers, None)
    errors: list[str] = []
    try:
        check_ray_gpus(num_gpus)
        # SPREAD: shards go to every node of a cluster, not first to the driver's own.
        remote = ray.remote(shard_fn).options(
            max_retries=RAY_MAX_RETRIES, scheduling_strategy="SPREAD", num_gpus=num_gpus
        )
        shared = [ray.put(arg) for arg in args]  # once, not once per task (a split map can be large)
        refs = {remote.remote(task, *shared): task for task in tasks}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in done:
                try:
                    stats = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - reported per shard, the rest goes on
                    errors.append(f"{describe(refs[ref])}: {type(exc).__name__}: {exc}")
                    continue
                on_done(refs[ref], stats, False)
    finally:
        if started_here:
            ray.shutdown()
    return errors
