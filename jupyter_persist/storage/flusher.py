"""Writing a notebook's unwritten outputs, one notebook at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from tornado.web import HTTPError
from traitlets.config import LoggingConfigurable

from ..logs import OnceWarnings
from ..model.store import CaptureStore, Execution
from ..model.widgets import notebook_widget_state
from .releases import ReleaseQueue
from .roomoutputs import RoomOutputs
from .writer import CellUpdate, NotebookUnavailable, NotebookWriter, WidgetStateBuilder


class Flusher(LoggingConfigurable):
    """Merges the store's unwritten executions into their notebooks through the writer.

    Never while a client is attached to one of the notebook's kernels (unless told to
    ignore clients, when the server stops); one write per notebook at a time; one
    WARNING per notebook and reason, not one per attempt.

    A notebook is written again only once the time since its last write is long enough
    for writing to take at most ``max_write_share`` of the time: a 50 MB notebook whose
    write takes a second is written every ~20 s rather than every ``save_interval``, so
    the server keeps its time (and event loop) for everything else. The crash journal
    still records every output within its own interval. The pause holds while a cell of
    the notebook runs, and for the write asked for when a run ends with no client
    attached (``run_ended``): cells run one after the other into a 60 MB notebook each
    asked for a save of it (150 saves in 90 s, each holding the event loop for about
    100 ms in the ContentsManager). Once no cell runs, the next tick writes the
    notebook whatever the pause. (When it was paced on wall time, a 100 kB notebook's
    write took 2 s on a machine short of CPU, and its final state would otherwise have
    waited 38 s; writes are now paced on their CPU time.)

    While a collaboration room is open for the notebook, the outputs go into the room's
    shared document instead of the file, and the room saves it (see :mod:`.room`);
    except when the server stops, which cancels the rooms' pending saves.
    """

    def __init__(
        self,
        store: CaptureStore,
        writer: NotebookWriter,
        attached: Callable[[str], bool],
        max_write_share: float = 1.0,
        *,
        find_room: Callable[[str], Awaitable[Any | None]] | None = None,
        owner_attached: Callable[[Execution], bool] | None = None,
        page_owns: Callable[[str], bool] | None = None,
        tab_saving: Callable[[str], bool] | None = None,
        release_written: bool = False,
        releases: ReleaseQueue | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.attached = attached
        #: Whether the client that started an execution is attached (default: any client).
        self.owner_attached = owner_attached or (lambda e: self.attached(e.kernel_id))
        #: Whether a page opening a notebook holds its file (``CaptureManager.page_owns``).
        self.page_owns = page_owns or (lambda path: False)
        #: Whether a returning tab is about to save a notebook (``AttachedClients``).
        self.tab_saving = tab_saving or (lambda path: False)
        self.store = store
        self.writer = writer
        #: Let go of the server's finished runs once on disk (``CaptureStore.release_written``):
        #: only where the save guard can read them back from the file.
        self.release_written = release_written
        self.releases = releases or ReleaseQueue(store, parent=self)
        self.max_write_share = max_write_share
        #: Per notebook, the monotonic time before which it is not written again.
        self.not_before: dict[str, float] = {}
        #: Per notebook, when we last wrote it (seconds since the epoch).
        self.last_written: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.warnings = OnceWarnings(self.log)
        #: Writes outputs into open collaboration rooms (``find_room``: a path's room).
        self.rooms = (
            RoomOutputs(find_room, self.warnings, self.log) if find_room is not None else None
        )
        #: Notebooks being saved by us right now (the save guard sees our saves too).
        self.saving: set[str] = set()
        #: Set when the server stops (``stop``): a round's rest between two writes ends.
        self._stopped = asyncio.Event()
        #: Per notebook the writer keeps a parsed copy of and none of whose cells runs,
        #: since when (our last flush of it, or the first flush that found it so): the
        #: copy goes at the first flush at least ``KEEP_PARSED_SECONDS`` later.
        self._finished_since: dict[str, float] = {}
        #: Parsed copies dropped so far (memory may have been freed: see the heap trim).
        self.copies_dropped = 0

    @asynccontextmanager
    async def no_write(self, path: str) -> AsyncIterator[None]:
        """No write of ours to ``path`` within (one under way ends first)."""
        async with self._locks.setdefault(path, asyncio.Lock()):
            yield

    def stop(self) -> None:
        """The server stops: write whatever clients hold, and no longer spread writes out."""
        self._stopped.set()

    @property
    def stopping(self) -> bool:
        """The server stops: clients are ignored (their rooms cancel pending saves)."""
        return self._stopped.is_set()

    async def flush_all(self, ignore_clients: bool = False, spread: float = 0.0) -> None:
        """Write every notebook with unwritten outputs, spread over ``spread`` seconds.

        Most of a save runs on the event loop (jupyter_server signs the notebook in its
        trust database, copies the old file aside and syncs the new one): measured, 20
        notebooks written back to back held up the server's requests for a second
        every ``save_interval``. Spread over half of it, each write runs alone.

        A written notebook is followed by a rest of ``spread / len(paths)``, whatever its
        write took: on a machine short of CPU, where a write's wall time is mostly waits
        for a core, a round of 20 then outlasts the save interval and the rounds back off
        (see ``CaptureManager._write_rounds``). Writing the next at once instead wrote
        them 60% more often, for as much more of the event loop, and no better lag.
        """
        self._drop_finished_copies()
        paths = sorted(self.store.paths_to_write())
        gap = spread / len(paths) if paths else 0.0
        for index, path in enumerate(paths):
            outcome = await self.flush(path, ignore_clients)
            if self.stopping or outcome != "written" or index == len(paths) - 1:
                continue
            await self.stopped_within(gap)

    async def stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds`` (at least a turn of the event loop); whether ``stop`` came."""
        if self._stopped.is_set() or seconds <= 0:
            await asyncio.sleep(0)
            return self._stopped.is_set()
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except asyncio.TimeoutError:
            # Set in the same turn of the loop as the timeout (Python < 3.12 gives up then).
            return self._stopped.is_set()
        return True

    async def flush(
        self,
        path: str,
        ignore_clients: bool = False,
        ignore_pause: bool = False,
        run_ended: bool = False,
    ) -> str:
        """Write the unwritten outputs of one notebook; never raises. Returns the outcome.

        The outcome is one of ``written``, ``up to date``, ``client attached`` (an open
        tab saves the notebook), ``page loading`` (a page opening the notebook holds its
        file until its kernel connects), ``paused`` (see ``max_write_share``), ``unavailable``
        (the notebook cannot be read; outputs kept in memory), ``save failed`` (the
        ContentsManager could not save it; outputs kept in memory), ``written to room``
        (into the notebook's open collaboration room, which saves the file), ``in room``
        (written there already, the room's save is pending), ``room loading`` or
        ``error``. ``run_ended``: asked for because a run ended, so the pause holds even
        though no cell may run any more (the next tick writes).
        """
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            try:
                outcome = await self._write(
                    path, ignore_clients or self.stopping, ignore_pause, run_ended
                )
                if self.release_written:
                    # Also after "up to date": a run that ended with nothing new to write.
                    self.releases.written(path)
                return outcome
            except Exception:
                self.log.exception("jupyter_persist: error writing %s", path)
                return "error"

    async def _write(
        self, path: str, ignore_clients: bool, ignore_pause: bool, run_ended: bool = False
    ) -> str:
        executions = self.store.to_write(path)
        if not executions:
            self._forget_if_done(path)
            return "up to date"
        if not ignore_clients and self.page_owns(path):
            return "page loading"
        if not ignore_clients and self.tab_saving(path):
            return "tab saving"
        if not ignore_clients and any(self.attached(e.kernel_id) for e in executions):
            if self.rooms is None:
                return "client attached"
            return await self.rooms.write_for_absent_owners(path, executions, self.owner_attached)
        if (
            not (ignore_clients or ignore_pause)
            and time.monotonic() < self.not_before.get(path, 0.0)
            and (run_ended or self._running(path))
        ):
            return "paused"
        # Clients are ignored only when the server stops, which cancels the rooms' saves.
        if not ignore_clients and self.rooms is not None:
            document = await self.rooms.open(path)
            if document is not None:
                outcome = self.rooms.write(path, document, executions)
                if outcome is not None:
                    return outcome
        versions = {e.cell_id: (e, e.version) for e in executions if e.cell_id is not None}
        updates = {
            cell_id: CellUpdate(e.area.to_json(), e.area.execution_count, e.code)
            for cell_id, (e, _) in versions.items()
        }
        self.saving.add(path)
        try:
            result = await self.writer.merge(path, updates, self._widget_state_of(path))
        except NotebookUnavailable as err:
            self.warnings.warn(
                path, "file", f"jupyter_persist: not writing {path}: {err}; outputs kept in memory"
            )
            return "unavailable"
        except (HTTPError, OSError) as err:
            # The ContentsManager could not save (disk full, quota, permissions); it
            # logs its own error. Ours is one WARNING until a write succeeds again.
            reason = err.log_message if isinstance(err, HTTPError) else str(err)
            self.warnings.warn(
                path,
                "file",
                f"jupyter_persist: cannot save {path} ({reason}); outputs kept in memory "
                "and in the journal, tried again at every save interval",
            )
            return "save failed"
        finally:
            self.saving.discard(path)
        self.warnings.clear(path, "file")
        for cell_id in result.merged:
            execution, version = versions[cell_id]
            execution.written_version = version
        self.warnings.missing_cells(path, "cells", result.missing, "no longer exist")
        self._warn_widgets_too_big(path, result.widgets_too_big)
        if result.widgets is not None:
            self.store.widgets.wrote(path, result.widgets, only_these=True)
        self._forget_if_done(path)
        if not result.saved:
            return "up to date"
        self.last_written[path] = time.time()
        # Paced on the write's CPU time: its wall time also counts the waits for a core,
        # which on a machine short of CPU would space out every notebook's writes alike.
        cost = result.seconds if result.cpu_seconds is None else result.cpu_seconds
        pause = pause_after_write(cost, self.max_write_share)
        self.not_before[path] = time.monotonic() + pause
        self.log.info(
            "jupyter_persist: wrote %s (%d cell(s), %d bytes, %.0f ms)",
            path,
            len(result.merged),
            result.bytes,
            result.seconds * 1000,
        )
        self.log.debug(
            "jupyter_persist: the write of %s cost %.0f ms (%s); not written again for %.1f s",
            path,
            cost * 1000,
            "wall time" if result.cpu_seconds is None else "CPU",
            pause,
        )
        return "written"

    async def flush_into_room(self, path: str) -> Any | None:
        """Write the notebook's unwritten outputs into its open room, clients or not.

        Returns the room's notebook, or None when no room is open (nothing written).
        """
        if self.rooms is None:
            return None
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            try:
                document = await self.rooms.open(path)
                if document is not None:
                    self.rooms.write(path, document, self.store.to_write(path))
                return document
            except Exception:
                self.log.exception("jupyter_persist: error writing %s into its room", path)
                return None

    def _widget_state_of(self, path: str) -> WidgetStateBuilder:
        """The notebook's widget state, from the models of the kernels its cells ran on."""
        kernels = self.store.widget_kernels(path)
        max_bytes = self.store.limits.max_rich_output_bytes
        return lambda roots, saved: notebook_widget_state(roots, kernels, saved, max_bytes)

    def _warn_widgets_too_big(self, path: str, too_big: list[tuple[str, int]]) -> None:
        if not too_big:
            self.warnings.clear(path, "widgets")
            return
        models = ", ".join(f"{model_id} ({size:,} bytes)" for model_id, size in too_big)
        self.warnings.warn(
            path,
            "widgets",
            f"jupyter_persist: left the state of {len(too_big)} widget model(s) of {path} "
            f"out of the notebook, each over max_rich_output_bytes: {models}",
        )

    def paths(self) -> set[str]:
        """Notebooks the flusher keeps bookkeeping of (write pacing, times, locks)."""
        return set(self.not_before) | set(self.last_written) | set(self._locks)

    def forget_path(self, path: str, keep_last_write: bool = False) -> None:
        """Nothing of the notebook is held any more: drop its bookkeeping.

        ``keep_last_write``: the status still lists the notebook (released runs of it
        stay), with its last write time.
        """
        self.not_before.pop(path, None)
        self._finished_since.pop(path, None)
        self._drop_copy(path)
        if not keep_last_write:
            self.last_written.pop(path, None)
        lock = self._locks.get(path)
        if lock is not None and not lock.locked():
            del self._locks[path]
        self.warnings.forget(path)

    def _running(self, path: str) -> bool:
        return any(e.running for e in self.store.executions() if e.path == path)

    def _forget_if_done(self, path: str) -> None:
        """After a write: the writer's parsed copy goes soon once none of the cells runs.

        Not at once: cells run one after the other (a run-all, a user trying variants)
        would each have their notebook read and parsed again before their write, which
        for a 60 MB notebook held the event loop (the ContentsManager's trust check,
        validation and hash) and the GIL (its JSON parser) for as long as the write.
        """
        if self._running(path):
            self._finished_since.pop(path, None)
        else:
            self._finished_since[path] = time.monotonic()

    def _drop_finished_copies(self) -> None:
        """Drop the copies of notebooks none of whose cells ran for ``KEEP_PARSED_SECONDS``.

        A copy stays while outputs wait to be written into it (a run's end paused by
        ``max_write_share``): that write would otherwise read and parse the file again.
        Every copy the writer keeps is looked at, not only those of our last writes: a
        copy can come from a write after which a tab took the notebook over, from the
        journal's recovery at start, or be left under a notebook's old name by a rename.
        """
        now = time.monotonic()
        kept = set(self.writer.kept_paths())
        for path in set(self._finished_since) - kept:
            del self._finished_since[path]
        waiting = self.store.paths_to_write()
        for path in kept:
            if path in waiting or self._running(path):
                self._finished_since.pop(path, None)
            elif now - self._finished_since.setdefault(path, now) >= KEEP_PARSED_SECONDS:
                del self._finished_since[path]
                self._drop_copy(path)

    def _drop_copy(self, path: str) -> None:
        if self.writer.forget(path):
            self.copies_dropped += 1


#: How long the parsed copy of a notebook whose cells all finished is kept for the next
#: run's write (dropped at the first flush after that; see ``Flusher._forget_if_done``).
KEEP_PARSED_SECONDS = 3.0


def pause_after_write(seconds: float, max_share: float) -> float:
    """Seconds to wait after a write that took ``seconds`` so writing takes ``max_share``."""
    if max_share >= 1.0 or seconds <= 0:
        return 0.0
    return seconds * (1.0 / max_share - 1.0)
