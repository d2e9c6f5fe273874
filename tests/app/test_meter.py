"""The event-loop meter: what it counts for callbacks and for coroutines' steps."""

from __future__ import annotations

import _thread
import asyncio
import gc
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import fetch_json, run_on_disk_and_leave

from jupyter_persist.meter import CpuClock, LoopMeter, other_threads_cpu


def test_a_callback_is_counted_with_its_longest_block() -> None:
    meter = LoopMeter()
    for pause in (0.001, 0.02, 0.005):
        with meter.timing("iopub"):
            time.sleep(pause)
    assert 0.026 <= meter.seconds["iopub"] < 0.2
    assert 0.02 <= meter.longest["iopub"] < 0.1
    meter.messages = 1000
    snapshot = meter.snapshot()
    assert snapshot["iopub_us_per_message"] == pytest.approx(meter.seconds["iopub"] * 1000, 0.01)
    assert snapshot["longest_ms"]["iopub"] >= 20


def spin(seconds: float) -> None:
    """Hold the CPU (not only the wall clock) for ``seconds`` of this thread's CPU time."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_blocks_cpu_time_tells_work_from_waiting() -> None:
    """A block that waits (for a core, the GIL, a sleep) is long in wall time only."""
    meter = LoopMeter()
    with meter.timing("save_guard"):
        time.sleep(0.05)
    assert meter.longest["save_guard"] >= 0.05
    assert meter.longest_cpu["save_guard"] < 0.01
    with meter.timing("flush"):
        spin(0.06)
    assert meter.longest_cpu["flush"] == pytest.approx(0.06, abs=0.01)
    assert meter.longest["flush"] >= meter.longest_cpu["flush"]
    snapshot = meter.snapshot()
    assert snapshot["longest_cpu_ms"]["save_guard"] < 10
    assert snapshot["longest_cpu_ms"]["flush"] == pytest.approx(60, abs=10)


def test_an_inner_blocks_cpu_time_is_not_the_outer_ones() -> None:
    meter = LoopMeter()
    with meter.timing("flush"):
        spin(0.02)
        with meter.timing("contents_manager"):
            spin(0.06)
    assert meter.longest_cpu["contents_manager"] == pytest.approx(0.06, abs=0.01)
    assert meter.longest_cpu["flush"] == pytest.approx(0.02, abs=0.01)


async def test_a_coroutine_steps_cpu_time_is_its_own() -> None:
    meter = LoopMeter()

    async def write() -> None:
        spin(0.01)
        await asyncio.sleep(0.1)  # between steps: neither wall nor CPU of a block
        time.sleep(0.3)  # noqa: ASYNC251 (a step that waits)

    await meter.timed("journal", write())
    assert meter.longest["journal"] >= 0.3
    assert meter.longest_cpu["journal"] < 0.01  # the longest step is the one that waited


def test_garbage_collections_are_counted_apart_from_the_block_they_interrupt() -> None:
    meter = LoopMeter()
    heap = [[i] for i in range(400_000)]  # containers the collector has to go through
    meter.watch_gc()
    try:
        with meter.timing("flush"):
            started = time.perf_counter()
            gc.collect()
            collected_in = time.perf_counter() - started
    finally:
        meter.unwatch_gc()
    assert meter.gc_collections == 1
    assert meter.gc_longest == pytest.approx(collected_in, rel=0.2, abs=0.002)
    assert meter.longest["flush"] < collected_in / 2
    assert meter.longest_cpu["flush"] < collected_in / 2  # its CPU time is the collection's
    snapshot = meter.snapshot()
    assert snapshot["gc"]["collections"] == 1
    assert "gc" not in snapshot["seconds"]  # not the extension's own time
    gc.collect()  # no longer watched
    assert meter.gc_collections == 1
    assert meter._on_gc not in gc.callbacks
    del heap


async def test_only_the_steps_a_coroutine_runs_on_the_loop_are_counted() -> None:
    meter = LoopMeter()

    async def write() -> str:
        time.sleep(0.03)  # noqa: ASYNC251 (holds the loop, on purpose)
        await asyncio.sleep(0.2)  # does not
        await asyncio.to_thread(time.sleep, 0.2)  # a worker thread's time: not the loop's
        time.sleep(0.01)  # noqa: ASYNC251
        return "written"

    assert await asyncio.ensure_future(meter.timed("flush", write())) == "written"
    assert 0.04 <= meter.seconds["flush"] < 0.15
    assert 0.03 <= meter.longest["flush"] < 0.1


async def test_an_exception_and_a_cancellation_pass_through() -> None:
    meter = LoopMeter()

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await meter.timed("flush", fails())
    task = asyncio.ensure_future(meter.timed("flush", asyncio.sleep(10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "flush" in meter.seconds


async def test_inner_timings_are_not_counted_again_in_outer_ones() -> None:
    meter = LoopMeter()

    async def contents_manager_save() -> None:
        time.sleep(0.05)  # noqa: ASYNC251 (holds the loop, on purpose)

    async def write() -> None:
        time.sleep(0.01)  # noqa: ASYNC251
        await meter.timed("contents_manager", contents_manager_save())
        with meter.timing("contents_manager"):
            time.sleep(0.02)  # noqa: ASYNC251

    await meter.timed("flush", write())
    assert 0.01 <= meter.seconds["flush"] < 0.04
    assert 0.07 <= meter.seconds["contents_manager"] < 0.2
    assert meter.longest["contents_manager"] >= 0.05


async def test_the_save_guard_is_counted_apart_from_the_contents_manager(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    """Our pre- and post-save hooks run inside the ContentsManager's save: theirs is ours."""
    await run_on_disk_and_leave(
        jp_ws_fetch, jp_root_dir, notebook_session, capture, "guarded.ipynb", "print('start')"
    )
    event_loop = (await fetch_json(jp_fetch, "api", "persist", "status"))["event_loop"]
    assert event_loop["seconds"]["save_guard"] > 0
    assert event_loop["seconds"]["contents_manager"] > 0
    assert "save_guard" in event_loop["longest_ms"]
    for kind, cpu_ms in event_loop["longest_cpu_ms"].items():  # the same blocks' CPU time
        assert 0 <= cpu_ms <= event_loop["longest_ms"][kind] + 1, kind
    assert event_loop["longest_cpu_ms"].keys() == event_loop["longest_ms"].keys()


async def test_the_server_counts_garbage_collections_while_it_captures(
    jp_fetch: Any, capture: Any
) -> None:
    capture.start()  # as the server's start, or its first kernel, does
    gc.collect()
    event_loop = (await fetch_json(jp_fetch, "api", "persist", "status"))["event_loop"]
    assert event_loop["gc"]["collections"] >= 1
    assert event_loop["gc"]["longest_ms"] > 0
    await capture.stop()
    assert capture.meter._on_gc not in gc.callbacks


def burn_cpu(seconds: float) -> None:
    """Spend ``seconds`` of the calling thread's CPU."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


async def test_a_coroutines_cpu_is_its_loop_steps_and_the_workers_not_its_waits() -> None:
    # The extension's own thread, busy all along, is not the coroutine's.
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            burn_cpu(0.01)

    own = threading.Thread(target=busy, name="jupyter-persist-busy")

    async def write() -> str:
        burn_cpu(0.03)  # a step on the loop
        await asyncio.sleep(0.3)  # a wait: no CPU
        await asyncio.to_thread(burn_cpu, 0.05)  # a worker thread's CPU
        await asyncio.to_thread(time.sleep, 0.2)  # a worker thread waiting: no CPU
        burn_cpu(0.02)
        return "written"

    clock = CpuClock()
    own.start()
    started = time.perf_counter()
    assert await clock.run(write()) == "written"
    assert time.perf_counter() - started >= 0.5
    stop.set()
    own.join()
    assert clock.seconds is not None
    assert 0.1 <= clock.seconds < 0.16, clock.seconds


async def test_a_failing_coroutine_still_gets_its_cpu_counted() -> None:
    async def fails() -> None:
        await asyncio.to_thread(burn_cpu, 0.05)
        raise ValueError("no")

    clock = CpuClock()
    with pytest.raises(ValueError, match="no"):
        await clock.run(fails())
    assert clock.seconds is not None
    assert clock.seconds >= 0.05


def test_threads_started_outside_threading_are_left_out_even_once_ended() -> None:
    seen: list[threading.Thread] = []
    done = threading.Event()

    def foreign() -> None:
        seen.append(threading.current_thread())  # a dummy Thread, listed for good
        done.set()

    _thread.start_new_thread(foreign, ())
    assert done.wait(5)
    time.sleep(0.1)  # ended by now
    assert seen[0] in threading.enumerate()
    cpu = other_threads_cpu()
    assert cpu is not None
    assert seen[0].native_id not in cpu


async def test_elsewhere_than_on_linux_nothing_is_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    clock = CpuClock()
    assert await clock.run(asyncio.sleep(0, "done")) == "done"
    assert clock.seconds is None
