"""How long the extension holds the server's event loop, measured as it runs.

Every request the server answers waits behind the callbacks ready before it, ours
included; these counters say how much of that is ours (``GET /api/persist/status``,
``jupyter persist status``, and the benchmark's "µs per IOPub message" row).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Coroutine, Generator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class LoopMeter:
    """Seconds spent on the event loop per kind of work, and the longest single block.

    Timings nest: time counted for an inner kind (the ContentsManager's part of a
    write) is not counted again for the outer one (the write).

    While :meth:`watch_gc` is on, the interpreter's garbage collections are counted
    apart (``gc``), whoever's allocation started them, and not in the block they
    interrupted: a full collection of a server's heap (some 235,000 objects, most of
    them jupyter_server's and its imports', with or without the extension) takes
    about 90 ms on the machine of docs/benchmarks.md.

    Each block's CPU time (the loop thread's own clock) is kept beside its wall time:
    where the longest block's CPU time is much shorter, the loop thread spent the rest
    waiting for a core or for the GIL, not running our code.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.longest: dict[str, float] = {}
        #: The CPU seconds of each kind's longest block (``longest``).
        self.longest_cpu: dict[str, float] = {}
        #: IOPub messages received (local kernels and gateway frames).
        self.messages = 0
        #: Every second counted so far, to take inner timings out of outer ones.
        self._counted = 0.0
        #: The same in the CPU time of the threads that were timed.
        self._counted_cpu = 0.0
        #: Garbage collections seen: how many, their seconds, the longest.
        self.gc_collections = 0
        self.gc_seconds = 0.0
        self.gc_longest = 0.0
        self._gc_started: float | None = None
        self._gc_started_cpu = 0.0

    def watch_gc(self) -> None:
        """Count garbage collections from now on (until :meth:`unwatch_gc`)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Called by the interpreter in whichever thread collects, holding the GIL: the
        # event loop waits meanwhile in any case.
        if phase == "start":
            self._gc_started = time.perf_counter()
            self._gc_started_cpu = time.thread_time()
            return
        if self._gc_started is None:
            return
        pause = time.perf_counter() - self._gc_started
        self._gc_started = None
        self.gc_collections += 1
        self.gc_seconds += pause
        self.gc_longest = max(self.gc_longest, pause)
        self._counted += pause
        # The collecting thread's: a block of another thread loses it only by a
        # collection in that thread, rare while it holds the GIL (its figure then errs low).
        self._counted_cpu += time.thread_time() - self._gc_started_cpu

    def add(self, kind: str, seconds: float, cpu_seconds: float | None = None) -> None:
        self._counted += seconds
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        if cpu_seconds is not None:
            self._counted_cpu += cpu_seconds
        if seconds > self.longest.get(kind, 0.0):
            self.longest[kind] = seconds
            self.longest_cpu[kind] = seconds if cpu_seconds is None else cpu_seconds

    def start(self) -> tuple[float, float, float, float]:
        """A block's start: its clocks and what was counted so far (see :meth:`since`)."""
        return time.perf_counter(), self._counted, time.thread_time(), self._counted_cpu

    def since(self, kind: str, started: tuple[float, float, float, float]) -> None:
        """Count the time since ``started`` less what inner timings counted meanwhile."""
        wall, counted, cpu, counted_cpu = started
        inner, inner_cpu = self._counted - counted, self._counted_cpu - counted_cpu
        cpu_seconds = max(time.thread_time() - cpu - inner_cpu, 0.0)
        self.add(kind, time.perf_counter() - wall - inner, cpu_seconds)

    @contextmanager
    def timing(self, kind: str) -> Iterator[None]:
        """Count the time of a synchronous callback."""
        started = self.start()
        try:
            yield
        finally:
            self.since(kind, started)

    def timed(self, kind: str, coro: Coroutine[Any, Any, T]) -> _TimedCoroutine[T]:
        """Wrap a coroutine so that each step it runs on the loop is counted as a block.

        A step is what runs between two awaits that suspend: that is how long the loop
        is held; what runs in worker threads meanwhile is not counted.
        """
        return _TimedCoroutine(self, kind, coro)

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON: seconds and longest block (ms) per kind, messages."""
        total = sum(self.seconds.values())
        iopub = self.seconds.get("iopub", 0.0)
        return {
            "messages": self.messages,
            "seconds": {k: round(v, 6) for k, v in sorted(self.seconds.items())},
            "seconds_total": round(total, 6),
            "longest_ms": {k: round(v * 1000, 3) for k, v in sorted(self.longest.items())},
            # The same blocks' CPU time: the rest was waiting for a core or the GIL.
            "longest_cpu_ms": {k: round(v * 1000, 3) for k, v in sorted(self.longest_cpu.items())},
            "iopub_us_per_message": round(iopub / self.messages * 1e6, 2) if self.messages else 0.0,
            "gc": {
                "collections": self.gc_collections,
                "seconds": round(self.gc_seconds, 6),
                "longest_ms": round(self.gc_longest * 1000, 3),
                # Left out of every collection (see gcpauses.freeze_startup_objects).
                "frozen_objects": gc.get_freeze_count(),
            },
        }


class _SteppedCoroutine(Coroutine[Any, Any, T]):
    """A coroutine with a hook around each step it runs (between two suspending awaits)."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro

    def _step_started(self) -> Any:
        raise NotImplementedError

    def _step_ended(self, started: Any) -> None:
        raise NotImplementedError

    def send(self, value: Any) -> Any:
        started = self._step_started()
        try:
            return self._coro.send(value)
        finally:
            self._step_ended(started)

    def throw(self, *args: Any) -> Any:
        started = self._step_started()
        try:
            return self._coro.throw(*args)
        finally:
            self._step_ended(started)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        return self  # type: ignore[return-value]

    def __iter__(self) -> _SteppedCoroutine[T]:
        return self

    def __next__(self) -> Any:
        return self.send(None)


class _TimedCoroutine(_SteppedCoroutine[T]):
    """A coroutine whose every step is timed (see :meth:`LoopMeter.timed`)."""

    def __init__(self, meter: LoopMeter, kind: str, coro: Coroutine[Any, Any, T]) -> None:
        super().__init__(coro)
        self._meter = meter
        self._kind = kind

    def _step_started(self) -> tuple[float, float, float, float]:
        return self._meter.start()

    def _step_ended(self, started: tuple[float, float, float, float]) -> None:
        self._meter.since(self._kind, started)


#: Threads of the extension itself: their work is not a write's (the text log, a reader).
OWN_THREAD_PREFIX = "jupyter-persist-"


class CpuClock:
    """The CPU time the server's Python threads spend on one coroutine (a notebook write).

    The event loop's thread counts while it runs the coroutine's steps; every other Python
    thread (the ContentsManager's workers, which encode, validate and write the file)
    counts from the start to the end, except the extension's own. What those threads ran
    meanwhile for others counts too (the figure errs high), and a worker that ends
    during the write is missed. Wall time would also count the waits for a core and for
    the GIL, which on a machine short of CPU stretch every write alike. ``seconds`` stays
    None where threads' CPU clocks cannot be read (not Linux).
    """

    def __init__(self) -> None:
        self.seconds: float | None = None

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro``, measuring its CPU time into ``seconds``."""
        before = other_threads_cpu()
        if before is None:
            return await coro
        stepping = _CpuSteps(coro)
        try:
            return await stepping
        finally:
            after = other_threads_cpu() or {}
            others = sum(max(cpu - before.get(tid, 0.0), 0.0) for tid, cpu in after.items())
            self.seconds = stepping.seconds + others


def other_threads_cpu() -> dict[int, float] | None:
    """CPU seconds of each Python thread but the calling one and the extension's own.

    By kernel thread id, through Linux's per-thread CPU clock ids: a thread that ended
    meanwhile gives an error, where ``time.pthread_getcpuclockid`` on an ended thread
    is undefined behaviour (a crash). None elsewhere than on Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    current = threading.get_native_id()
    cpu: dict[int, float] = {}
    for thread in threading.enumerate():
        tid = thread.native_id
        if (
            tid is None
            or tid == current
            or thread.name.startswith(OWN_THREAD_PREFIX)
            # Threads started outside ``threading``: listed for good, even once ended.
            or isinstance(thread, _DUMMY_THREAD)
        ):
            continue
        try:
            cpu[tid] = time.clock_gettime(_thread_cpu_clock(tid))
        except OSError:
            continue  # ended since enumerate()
    return cpu


def _thread_cpu_clock(tid: int) -> int:
    """Linux's clock id of a thread's CPU time (``MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)``,
    what glibc's ``pthread_getcpuclockid`` returns)."""
    return (~tid << 3) | 6


_DUMMY_THREAD: type = getattr(threading, "_DummyThread", type(None))


class _CpuSteps(_SteppedCoroutine[T]):
    """A coroutine whose steps' CPU time on the calling thread is summed in ``seconds``."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        super().__init__(coro)
        self.seconds = 0.0

    def _step_started(self) -> float:
        return time.thread_time()

    def _step_ended(self, started: float) -> None:
        self.seconds += time.thread_time() - started
