"""Letting go of finished runs' outputs once the file holds them, a slice of the loop at a time.

Releasing a run digests its outputs (``Released.digest``: a later save or a late message
checks the file still holds them). After one save of a notebook of 150 runs of 400 kB
(our write when its kernel stops, or a tab's save after a day of work) that was 60 MB
digested in one piece: 160 ms of the event loop with ``json.dumps``, 40 ms without.
Here each step releases runs for about ``step_seconds`` and gives the loop back.

Nothing is lost by waiting: a run is released only if, when its turn comes, it still
may be (finished, unchanged since the write, still its cell's latest run); until then
its outputs simply stay in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from traitlets.config import LoggingConfigurable

from ..meter import LoopMeter
from ..model.store import CaptureStore, Execution

#: The event-loop time of releasing runs (see :class:`.LoopMeter`).
RELEASE = "release"
#: About how much of the loop thread's CPU time one step releases runs for.
RELEASE_STEP = 0.005


class ReleaseQueue(LoggingConfigurable):
    """Runs whose outputs are on disk, released from memory in steps on the event loop."""

    def __init__(
        self,
        store: CaptureStore,
        *,
        meter: LoopMeter | None = None,
        step_seconds: float = RELEASE_STEP,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.meter = meter or LoopMeter()
        self.step_seconds = step_seconds
        #: The server's event loop, where the store is changed (see :meth:`bind`).
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Each run to release, and whether it is the server's (a run no client saw whole).
        self._waiting: deque[tuple[Execution, bool]] = deque()
        self._scheduled = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Release in steps on ``loop``, the server's; until then, at once (as a save ends)."""
        self._loop = loop

    def saved_by_client(self, executions: Iterable[Execution]) -> None:
        """Release runs a client saw whole, once a save put them in the file."""
        self._add([(execution, False) for execution in executions])

    def written(self, path: str) -> None:
        """Release the server's finished runs of ``path`` that are on disk now."""
        self._add([(execution, True) for execution in self.store.latest_of(path)])

    def __len__(self) -> int:
        return len(self._waiting)

    def _add(self, runs: list[tuple[Execution, bool]]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            # No loop to come back on: the save's own runs, now.
            self._release(deque(runs), until=None)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._queue(runs)
        else:
            # A ContentsManager saving on a thread or loop of its own: the store is the
            # server loop's to change, while that loop goes on handling messages.
            loop.call_soon_threadsafe(self._queue, runs)

    def _queue(self, runs: list[tuple[Execution, bool]]) -> None:
        self._waiting.extend(runs)
        if self._waiting and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._step)

    def _step(self) -> None:
        self._scheduled = False
        with self.meter.timing(RELEASE):
            self._release(self._waiting, until=time.thread_time() + self.step_seconds)
        if self._waiting:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._step)

    def _release(self, runs: deque[tuple[Execution, bool]], until: float | None) -> None:
        """Release ``runs``, at least one, until ``until`` (``thread_time``) if given.

        CPU time, as the journal's steps (see ``Journal._append_steps``): where no core is
        free, a step of wall time holds less work and the steps multiply.
        """
        while runs:
            execution, server_owned = runs.popleft()
            try:
                if server_owned:
                    self.store.release_owned(execution)
                else:
                    self.store.release(execution)
            except Exception as err:
                # Its outputs stay in memory (the store keeps a run it could not make a
                # record of): nothing is lost, the server only keeps more.
                self.log.warning(
                    "jupyter_persist: could not release cell %s of %s from memory: %s",
                    execution.cell_id,
                    execution.path,
                    err,
                )
            if until is not None and time.thread_time() >= until:
                return
