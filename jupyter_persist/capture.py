"""The coordinator: wires the stages together and decides *when* outputs are written.

Kernels (``kernels/``) deliver messages and client events here; the model (``model/``)
rebuilds the outputs; the locator (``routing/``) says which cell they belong to; storage
(``storage/``) journals and writes them. Outputs are never written while a client is
attached to the notebook's kernel (the open editor owns the file), and, once none is,
within ``save_interval``, then every ``save_interval`` while output arrives, when an
execution ends, when its kernel restarts or stops, and when the server stops.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from traitlets import Any as AnyTrait
from traitlets import Bool, Float, Instance, Integer, Unicode
from traitlets.config import LoggingConfigurable

from .heap import HeapTrimmer, fix_malloc_thresholds, heap_free_bytes, malloc_trim
from .kernels.clients import AttachedClients
from .kernels.idle import correct_missed_idle
from .kernels.lifecycle import KernelTracker
from .kernels.listener import KernelListener
from .logs import debug_logged
from .meter import LoopMeter
from .model.caps import Limits
from .model.store import CaptureStore, Execution
from .routing.locator import ExecutionLocator
from .routing.router import Router
from .routing.sessions import ClientEvents
from .storage.flusher import Flusher
from .storage.journal import Journal
from .storage.recorder import Recorder
from .storage.releases import ReleaseQueue
from .storage.room import open_room_document, room_extension_loaded
from .storage.savehooks import SaveHooks, can_read_back
from .storage.textlog import TextLog
from .storage.writer import NotebookWriter

#: Seconds a flush asked for (REST, CLI) waits for the text log's thread to write.
TEXT_LOG_WAIT = 10.0


class CaptureManager(LoggingConfigurable):
    """Captures every kernel's outputs and writes them into the notebooks they belong to."""

    kernel_manager = AnyTrait(help="The server's MultiKernelManager.")
    session_manager = AnyTrait(help="The server's SessionManager.")
    contents_manager = AnyTrait(help="The server's ContentsManager.")
    save_interval = Float(5.0, help="Seconds between writes of a notebook (see PersistExtension).")
    journal_interval = Float(1.0, help="Seconds between journal appends (see PersistExtension).")
    state_dir = Unicode(help="Where journals live (see PersistExtension).")
    text_log_dir = Unicode(help="Where text logs live; empty: none (see PersistExtension).")
    text_log_max_bytes = Integer(10_000_000, help="Text log rotation size (see PersistExtension).")
    limits = Instance(Limits, args=(), help="Size caps of outputs (see PersistExtension).")
    max_write_share = Float(1.0, help="Largest share of time writing (see PersistExtension).")
    gil_switch_interval = Float(
        0.0, help="GIL switch interval while the ContentsManager works (see PersistExtension)."
    )
    replay_buffer_max_bytes = Integer(0, help="Replay buffer bound (see PersistExtension).")
    iopub_reader = Unicode("process", help="Where IOPub is read (see PersistExtension).")
    reader_nice = Integer(0, help="The reader's lower CPU priority (see PersistExtension).")
    trim_memory = Bool(True, help="Return freed memory to the OS (see PersistExtension).")
    freeze_startup_objects = Bool(
        True, help="Start-up objects out of garbage collections (see PersistExtension)."
    )
    track_kernel_activity = Bool(
        False, help="Keep kernels' activity for the server (see PersistExtension)."
    )
    web_settings = AnyTrait(
        None,
        allow_none=True,
        help="The server's tornado settings, where jupyter-collaboration's rooms are found.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Our time on the server's event loop (see :mod:`.meter`).
        self.meter = LoopMeter()
        self.store = CaptureStore(self.limits)
        self.heap = (
            HeapTrimmer(malloc_trim(), heap_free_bytes(), thresholds=fix_malloc_thresholds())
            if self.trim_memory
            else HeapTrimmer(None)
        )
        self.clients = AttachedClients()
        self.writer = NotebookWriter(
            self.meter,
            self.gil_switch_interval,
            contents_manager=self.contents_manager,
            parent=self,
        )
        text_log = None
        if self.text_log_dir:
            text_log = TextLog(
                Path(self.text_log_dir), self.text_log_max_bytes, in_thread=True, parent=self
            )
        journal = Journal(Path(self.state_dir) / "journals", parent=self)
        self.recorder = Recorder(
            self.store,
            self.writer,
            journal,
            text_log,
            self.journal_interval,
            meter=self.meter,
            parent=self,
        )
        #: Runs on disk let go of from memory, in steps (after our writes and clients' saves).
        self.releases = ReleaseQueue(self.store, meter=self.meter, parent=self)
        self.flusher = Flusher(
            self.store,
            self.writer,
            self.clients.any,
            self.max_write_share,
            find_room=self._find_room,
            owner_attached=self.owner_attached,
            page_owns=self.page_owns,
            tab_saving=self.clients.tab_saving,
            release_written=can_read_back(self.contents_manager),
            releases=self.releases,
            parent=self,
        )
        self.locator = ExecutionLocator(
            self.store, self.writer, session_manager=self.session_manager, parent=self
        )
        self.router = Router(
            self.store,
            self.recorder,
            self.locator,
            self.flusher,
            owner_attached=self.owner_attached,
            attached=self.clients.any,
            spawn=self._spawn,
            parent=self,
        )
        self.listener = KernelListener(
            on_message=self.router.on_iopub,
            on_gone=self._kernel_gone,
            meter=self.meter,
            kernel_manager=self.kernel_manager,
            iopub_reader=self.iopub_reader,
            reader_nice=self.reader_nice,
            trim_memory=self.trim_memory,
            track_kernel_activity=self.track_kernel_activity,
            parent=self,
        )
        self.kernels = KernelTracker(
            self.listener,
            on_start=self.start,
            on_restarted=self._kernel_restarted,
            on_gone=self._kernel_gone,
            kernel_manager=self.kernel_manager,
            parent=self,
        )
        #: What the kernel websocket hooks talk to.
        self.client_events = ClientEvents(
            self.clients,
            self.router,
            self.kernels,
            self.store,
            flusher=self.flusher,
            recorder=self.recorder,
            spawn=self._spawn,
            kernel_manager=self.kernel_manager,
            save_interval=self.save_interval,
            replay_buffer_max_bytes=self.replay_buffer_max_bytes,
            parent=self,
        )
        #: Registered by the extension as the ContentsManager's save hooks.
        self.save_hooks = SaveHooks(
            self.store,
            self.listener.catch_up,
            self.flusher.saving,
            on_saved_by_others=self.clients.saved,
            meter=self.meter,
            releases=self.releases,
            parent=self,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The rounds of writes (``_write_rounds``), until the flusher stops.
        self._rounds: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the flush and journal loops (idempotent; needs a running event loop).

        Journals a previous server left behind are merged into their notebooks first.
        """
        if self._rounds is None and not self.flusher.stopping:
            # (A kernel starting while the server stops must not start new rounds.)
            # Only here: a later kernel may start where no loop runs (a synchronous
            # kernel manager's start, run by jupyter_core's run_sync on a thread).
            self.releases.bind(asyncio.get_running_loop())
            self.meter.watch_gc()
            self._rounds = asyncio.ensure_future(self._write_rounds())
            self._rounds.add_done_callback(self._task_done)
            self._spawn(self.recorder.start())
            for kernel_id in self.kernel_manager.list_kernel_ids():
                self.kernels.track(kernel_id)

    async def stop(self) -> None:
        """Release every kernel subscription, journal and write everything still unwritten.

        A round of writes under way ends first, its remaining writes no longer spread out.
        """
        self.flusher.stop()
        self.meter.unwatch_gc()
        if self._rounds is not None:
            # Cancelling a round under way could leave a ContentsManager save running
            # in its thread unwaited for.
            await asyncio.wait([self._rounds])  # its failure, if any, is logged
            self._rounds = None
        self.recorder.stop()
        self.kernels.untrack_all()
        self.recorder.tick()
        await self.flusher.flush_all()
        self.recorder.tick()
        if self.recorder.text_log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.recorder.text_log.close)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(self.meter.timed("flush", coro))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("jupyter_persist: background task failed", exc_info=task.exception())

    def _kernel_restarted(self, kernel_id: str) -> None:
        # The old process's widget models are gone with it, once their state is written.
        stale = self.store.widgets.model_ids(kernel_id)
        self._finish_kernel(kernel_id, "restarted")
        self._spawn(self._flush_then(lambda: self.store.widgets.drop(kernel_id, stale)))
        self.kernels.resubscribe(kernel_id)
        self._spawn(self.kernels.until_capturing(kernel_id))

    def _kernel_gone(self, kernel_id: str) -> None:
        if self.flusher.stopping:
            return  # the server stops its kernels after our stop() wrote everything
        self.kernels.untrack(kernel_id)
        self._finish_kernel(kernel_id, "stopped")
        self.clients.forget_kernel(kernel_id)
        for path in self.router.forget_kernel(kernel_id):
            self.log.info(
                "jupyter_persist: stopped capturing %s (its kernel %s stopped)", path, kernel_id
            )
        self.log.info("jupyter_persist: stopped capturing kernel %s", kernel_id)
        release_owned = self.flusher.release_written  # the save guard can read them back
        self._spawn(self._flush_then(lambda: self._forget_kernel_runs(kernel_id, release_owned)))

    def _finish_kernel(self, kernel_id: str, why: str) -> None:
        finished = self.store.finish_kernel(kernel_id)
        for execution in finished:
            self.log.info(
                "jupyter_persist: kernel %s %s while cell %s of %s was running",
                kernel_id,
                why,
                execution.cell_id,
                execution.path,
            )
        if finished:
            self._spawn(self.flusher.flush_all())

    def _forget_kernel_runs(self, kernel_id: str, release_owned: bool) -> None:
        """A gone kernel's runs are on disk: forget them, and notebooks nothing is held of."""
        self.store.forget_written(kernel_id, release_owned)
        live = {e.path for e in self.store.executions()}
        recorded = {r.path for r in self.store.released_runs()}
        for path in (self.flusher.paths() | self.store.widgets.paths()) - live:
            self.store.widgets.forget_path(path)
            self.flusher.forget_path(path, keep_last_write=path in recorded)
            self.clients.forget_path(path)

    async def _flush_then(self, then: Callable[[], None]) -> None:
        await self.flusher.flush_all()
        then()

    def owner_attached(self, execution: Execution) -> bool:
        """Whether the client that started ``execution`` is attached (unknown: any client)."""
        return self.clients.owner_attached(execution.kernel_id, execution.client_session)

    def page_owns(self, path: str) -> bool:
        """Whether a page opening the notebook holds its file until its kernel connects.

        See ``AttachedClients.page_loading``; with collaboration the room holds the
        document, and the extension keeps writing the room.
        """
        if self.collaborative:
            return False
        return self.clients.page_loading(path, set(self.store.kernels_of(path)))

    @property
    def collaborative(self) -> bool:
        """Whether real-time collaboration (jupyter_server_ydoc) is loaded in this server."""
        return self.web_settings is not None and room_extension_loaded(self.web_settings)

    async def _write_rounds(self) -> None:
        """A round of writes every ``save_interval``, until the server stops.

        One that outlasts the interval (a machine short of CPU) is followed by the next
        at the next multiple of the interval from the first, as tornado's
        ``PeriodicCallback`` did: the writes back off when the server is short of time.
        Starting the next at once wrote 20 busy notebooks 60% more often in the
        benchmark, the ContentsManager's share of the event loop alike, for no better
        lag to the file (docs/benchmarks.md, ninth run).
        """
        loop = asyncio.get_running_loop()
        interval = self.save_interval
        due = loop.time() + interval
        while not await self.flusher.stopped_within(due - loop.time()):
            try:
                await self.meter.timed("flush", self._tick())
            except Exception:
                self.log.exception("jupyter_persist: error in a round of writes")
            due += interval * max(1, math.ceil((loop.time() - due) / interval))

    async def _tick(self) -> None:
        try:
            self.router.debug_messages = debug_logged(self.log)
            self.kernels.reconcile()
            correct_missed_idle(self.kernel_manager, self.listener, self.log)
            await self.locator.follow_sessions()
            await self.flusher.flush_all(spread=self.save_interval / 2)
            await self._trim_heap()
        except Exception:
            self.log.exception("jupyter_persist: error in the flush loop")

    async def _trim_heap(self) -> None:
        # What changes when memory may have been freed: messages in, runs released or
        # forgotten, notebooks written (their JSON text is a large temporary), parsed
        # copies of notebooks dropped.
        activity = (
            self.meter.messages,
            len(self.store),
            len(self.store.released_runs()),
            max(self.flusher.last_written.values(), default=0.0),
            self.flusher.copies_dropped,
        )
        if self.heap.due(activity, self.meter.messages):
            await asyncio.get_running_loop().run_in_executor(None, self.heap.run, activity)

    async def flush_now(self, path: str | None = None) -> dict[str, str]:
        """Journal everything now and write one notebook (or all) without waiting.

        For the REST API: skips the write pacing, but still never writes a notebook an
        attached client owns. Returns each notebook's outcome (see ``Flusher.flush``).
        """
        self.listener.catch_up()
        self.recorder.tick()
        if self.recorder.text_log is not None:
            wait = self.recorder.text_log.wait
            await asyncio.get_running_loop().run_in_executor(None, wait, TEXT_LOG_WAIT)
        paths = [path] if path is not None else sorted(self.store.paths_to_write())
        return {p: await self.flusher.flush(p, ignore_pause=True) for p in paths}

    async def _find_room(self, path: str) -> Any | None:
        if self.web_settings is None:
            return None
        return await open_room_document(self.web_settings, path)

    def captured_paths(self) -> set[str]:
        """Notebooks with outputs tracked in memory."""
        paths = {e.path for e in self.store.executions() if e.path is not None}
        return paths | {r.path for r in self.store.released_runs()}
