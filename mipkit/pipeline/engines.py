"""Run shard tasks: in this process, in a local process pool, or as Ray tasks.

Every build hands its own shard function to ``run_shards``; the function must accept
``(task, *args, on_event=callable)``, commit its shard and return the shard's stats dict.
``on_event`` streams progress from inside a shard (in-process and pool engines); Ray reports
each shard once it finishes, through ``on_done``.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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
) -> list[str]:
    """Run every task; an exception in one shard is reported in the returned list, the rest go on."""
    if engine not in ENGINES:
        raise MipkitError(f"--engine {engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    on_event = on_event or (lambda event: None)
    on_done = on_done or (lambda task, stats, streamed: None)
    if engine == "ray":
        return _run_ray(tasks, shard_fn, args, workers, on_done, describe)
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


def _run_ray(tasks: Sequence, shard_fn: ShardFn, args: tuple, workers: int, on_done: OnDone, describe) -> list[str]:
    try:
        import ray
    except ImportError:
        raise MipkitError("--engine ray needs Ray: pip install 'ray>=2.40'") from None
    started_here = not ray.is_initialized()
    if started_here:
        # RAY_ADDRESS in the environment joins an existing cluster; otherwise a local instance starts.
        ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False, configure_logging=False)
    remote = ray.remote(shard_fn)
    refs = {remote.remote(task, *args): task for task in tasks}
    errors: list[str] = []
    pending = list(refs)
    try:
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
