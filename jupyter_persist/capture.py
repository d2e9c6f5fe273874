"""Glue between the kernels, the websocket, the in-memory store and the notebook writer.

Decides *when* outputs are written: never while a client is attached to the notebook's
kernel (the open editor owns the file), and, once none is, within ``save_interval``,
then every ``save_interval`` while output arrives, when an execution ends, when its
kernel restarts or stops, and when the server stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from tornado.ioloop import PeriodicCallback
from traitlets import Any as AnyTrait
from traitlets import Float, Instance, Integer, Unicode
from traitlets.config import LoggingConfigurable

from .caps import Limits, output_message_size
from .clients import AttachedClients
from .flusher import Flusher
from .idle import correct_missed_idle
from .journal import Journal
from .listener import KernelListener
from .locator import ExecutionLocator
from .recorder import Recorder
from .replay import buffer_to_replay
from .room import open_room_document, room_extension_loaded
from .savehooks import SaveHooks
from .store import CaptureStore, Execution
from .textlog import TextLog
from .websocket import ExecuteRequest
from .writer import NotebookWriter

KERNEL_ACTIONS_SCHEMA = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
CONTENTS_SCHEMA = "https://events.jupyter.org/jupyter_server/contents_service/v1"
OUTPUT_MSG_TYPES = frozenset(
    {"stream", "display_data", "update_display_data", "execute_result", "error"}
)


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
    replay_buffer_max_bytes = Integer(0, help="Replay buffer bound (see PersistExtension).")
    web_settings = AnyTrait(
        None,
        allow_none=True,
        help="The server's tornado settings, where jupyter-collaboration's rooms are found.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = CaptureStore(self.limits)
        self.clients = AttachedClients()
        self.listener = KernelListener(
            on_message=self.on_iopub, kernel_manager=self.kernel_manager, parent=self
        )
        self.writer = NotebookWriter(contents_manager=self.contents_manager, parent=self)
        text_log = (
            TextLog(Path(self.text_log_dir), self.text_log_max_bytes, parent=self)
            if self.text_log_dir
            else None
        )
        self.recorder = Recorder(
            self.store,
            self.writer,
            Journal(Path(self.state_dir) / "journals", parent=self),
            text_log,
            self.journal_interval,
            parent=self,
        )
        self.flusher = Flusher(
            self.store,
            self.writer,
            self.attached,
            self.max_write_share,
            find_room=self._find_room,
            owner_attached=self.owner_attached,
            page_owns=self.page_owns,
            parent=self,
        )
        self.locator = ExecutionLocator(
            self.store, self.writer, session_manager=self.session_manager, parent=self
        )
        #: Registered by the extension as the ContentsManager's save hooks.
        self.save_hooks = SaveHooks(
            self.store,
            self.listener.catch_up,
            self.flusher.saving,
            on_saved_by_others=self.flusher.release_tab_hold,
            parent=self,
        )
        #: Notebooks each kernel's outputs went to, for the log lines of start and stop.
        self._notebooks: dict[str, set[str]] = {}
        self._restart_callbacks: dict[str, tuple[Any, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: PeriodicCallback | None = None
        self._stopping = False
        self._debug_messages = debug_logged(self.log)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the flush and journal loops (idempotent; needs a running event loop).

        Journals a previous server left behind are merged into their notebooks first.
        """
        if self._loop is None:
            self._loop = PeriodicCallback(self._tick, self.save_interval * 1000)
            self._loop.start()
            self._spawn(self.recorder.start())
            for kernel_id in self.kernel_manager.list_kernel_ids():
                self._track_kernel(kernel_id)

    async def stop(self) -> None:
        """Release every kernel subscription, journal and write everything still unwritten."""
        self._stopping = True
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        self.recorder.stop()
        for kernel_id in list(self.listener.kernel_ids):
            self._untrack_kernel(kernel_id)
        self.listener.close()
        self.recorder.tick()
        await self.flush_all()
        self.recorder.tick()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("jupyter_persist: background task failed", exc_info=task.exception())

    # -- kernels ---------------------------------------------------------------------

    async def on_kernel_action(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        """Follow kernel starts, restarts and shutdowns (jupyter_server's kernel events)."""
        kernel_id = data.get("kernel_id")
        if not kernel_id or data.get("status") != "success":
            return
        action = data.get("action")
        try:
            if action == "start":
                self.start()
                self._track_kernel(kernel_id)
            elif action == "restart":
                self._kernel_restarted(kernel_id)
            elif action == "shutdown":
                self._kernel_gone(kernel_id)
        except Exception:
            self.log.exception("jupyter_persist: error following kernel %s %s", action, kernel_id)

    def _track_kernel(self, kernel_id: str) -> None:
        if not self.listener.attach(kernel_id):
            return  # retried by the next tick
        if kernel_id in self._restart_callbacks:
            return
        self.log.info("jupyter_persist: capturing outputs of kernel %s", kernel_id)

        # The kernel restarter calls these synchronously: nothing may escape them.
        def on_restart() -> None:
            try:
                self._kernel_restarted(kernel_id)
            except Exception:
                self.log.exception("jupyter_persist: error following a restart of %s", kernel_id)

        def on_dead() -> None:
            try:
                self._kernel_gone(kernel_id)
            except Exception:
                self.log.exception("jupyter_persist: error following the death of %s", kernel_id)

        self.kernel_manager.add_restart_callback(kernel_id, on_restart, "restart")
        self.kernel_manager.add_restart_callback(kernel_id, on_dead, "dead")
        self._restart_callbacks[kernel_id] = (on_restart, on_dead)

    def _untrack_kernel(self, kernel_id: str) -> None:
        self.listener.detach(kernel_id)
        callbacks = self._restart_callbacks.pop(kernel_id, None)
        if callbacks is not None and kernel_id in self.kernel_manager:
            try:
                self.kernel_manager.remove_restart_callback(kernel_id, callbacks[0], "restart")
                self.kernel_manager.remove_restart_callback(kernel_id, callbacks[1], "dead")
            except Exception as err:
                self.log.debug("jupyter_persist: removing restart callbacks: %s", err)

    def _kernel_restarted(self, kernel_id: str) -> None:
        self._finish_kernel(kernel_id, "restarted")
        self.listener.attach(kernel_id)
        self.listener.mark_restarting(kernel_id)
        self._spawn(self.until_capturing(kernel_id))

    def _kernel_gone(self, kernel_id: str) -> None:
        self._untrack_kernel(kernel_id)
        self._finish_kernel(kernel_id, "stopped")
        self.clients.forget_kernel(kernel_id)
        self.locator.forget_kernel(kernel_id)
        for path in sorted(self._notebooks.pop(kernel_id, ())):
            self.log.info(
                "jupyter_persist: stopped capturing %s (its kernel %s stopped)", path, kernel_id
            )
        self.log.info("jupyter_persist: stopped capturing kernel %s", kernel_id)
        self._spawn(self._flush_and_forget(kernel_id))

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
            self._spawn(self.flush_all())

    async def _flush_and_forget(self, kernel_id: str) -> None:
        await self.flush_all()
        for execution in self.store.executions(kernel_id):
            # Unsaved outputs stay for a later write; server-owned ones stay so that the
            # save guard can still protect them from a stale tab.
            if not execution.dirty and not execution.server_owned:
                self.store.forget(execution)

    # -- clients (websocket side) ----------------------------------------------------

    def client_attached(self, kernel_id: str, session: str = "") -> None:
        """A client websocket connected to a kernel (``session``: its client session id)."""
        self.clients.attach(kernel_id, session)

    def client_detached(self, kernel_id: str, session: str = "") -> None:
        """A client websocket left; from the last one on, the server writes the outputs.

        The runs it started are the server's to keep from now on, whoever else is
        attached: other pages do not show another page's runs (unless our frontend
        extension does it for them), so their saves may lack those outputs.
        """
        remaining = self.clients.detach(kernel_id, session)
        if not self.clients.has_session(kernel_id, session):
            for execution in self.store.executions(kernel_id):
                if execution.running and execution.client_session == session:
                    execution.server_owned = True
        if remaining > 0:
            return
        for execution in self.store.executions(kernel_id):
            if execution.running:
                execution.server_owned = True
        unsaved = sum(1 for e in self.store.executions(kernel_id) if e.dirty)
        if unsaved:
            self.log.info(
                "jupyter_persist: last client left kernel %s; %d execution(s) it did not save "
                "will be written within %ss",
                kernel_id,
                unsaved,
                self.save_interval,
            )

    async def until_capturing(self, kernel_id: str) -> None:
        """Return once the kernel's IOPub subscription receives messages (or after 10 s)."""
        try:
            self._track_kernel(kernel_id)
            if not await self.listener.wait_live(kernel_id, timeout=10):
                self.log.warning(
                    "jupyter_persist: no IOPub message from kernel %s in 10 s; outputs of its "
                    "first execution may be missed",
                    kernel_id,
                )
        except Exception:
            self.log.exception("jupyter_persist: error waiting for kernel %s", kernel_id)

    async def before_replay(self, kernel_id: str, session_key: str) -> None:
        """A client comes back to the session the server kept messages for: rooms first.

        jupyter_server is about to replay to it what the kernel sent while it was away.
        The outputs of those executions go into the notebook's collaboration room, if
        one is open, right now; their messages are left out of the replay, or the tab
        would add them to the room's cells a second time.
        """
        try:
            buffer = buffer_to_replay(self.kernel_manager, kernel_id, session_key)
            if buffer is None:
                return
            self.listener.catch_up()
            in_room: set[str] = set()
            paths = {e.path for e in self.store.executions(kernel_id) if e.path is not None}
            for path in sorted(paths):
                document = await self.flusher.flush_into_room(path)
                if document is None:
                    continue
                in_room.update(
                    e.msg_id
                    for e in self.store.executions(kernel_id)
                    if e.path == path and e.in_room(document)
                )
            buffer.skip_outputs_of = frozenset(in_room)
        except Exception:
            self.log.exception("jupyter_persist: error before replaying kernel %s", kernel_id)

    def on_input_request(self, kernel_id: str, msg: dict[str, Any]) -> None:
        """A kernel asks for input while no client is attached: say so, write what ran."""
        try:
            execution = self.store.get((msg.get("parent_header") or {}).get("msg_id", ""))
            prompt = str((msg.get("content") or {}).get("prompt", ""))
            where = f"cell {execution.cell_id} of {execution.path}" if execution else "a cell"
            self.log.info(
                "jupyter_persist: %s on kernel %s is waiting for input (%r) and no client "
                "is attached to answer",
                where,
                kernel_id,
                prompt,
            )
            if execution is None:
                return
            self.recorder.note(execution, f"[waiting for input: {prompt!r}]\n")
            if execution.path is not None:
                self._spawn(self.flush(execution.path))
        except Exception:
            self.log.exception("jupyter_persist: error noting an input request")

    def attached(self, kernel_id: str) -> bool:
        """Whether any client websocket is attached to the kernel."""
        return self.clients.any(kernel_id)

    def owner_attached(self, execution: Execution) -> bool:
        """Whether the client that started ``execution`` is attached (unknown: any client)."""
        if execution.client_session is None:
            return self.clients.any(execution.kernel_id)
        return self.clients.has_session(execution.kernel_id, execution.client_session)

    def page_owns(self, path: str) -> bool:
        """Whether a page opening the notebook holds its file until its kernel connects.

        The page's frontend opens its follow socket (see :mod:`.follow`) before it loads
        the file; a write between that load and the page's kernel connection would make
        JupyterLab report "File Changed" at the page's next save. Once a client attaches
        to the notebook's kernel, attached clients decide as always. With collaboration
        the room holds the document, and the extension keeps writing the room.
        """
        if self.collaborative:
            return False
        kernel_ids = {e.kernel_id for e in self.store.latest_of(path)}
        return self.clients.page_loading(path, kernel_ids)

    @property
    def collaborative(self) -> bool:
        """Whether real-time collaboration (jupyter_server_ydoc) is loaded in this server."""
        return self.web_settings is not None and room_extension_loaded(self.web_settings)

    def on_execute_request(self, kernel_id: str, request: ExecuteRequest) -> None:
        """A client asked a kernel to execute code (seen on the kernel websocket)."""
        execution = self.store.begin(kernel_id, request.msg_id, request.cell_id, request.code)
        execution.client_session = request.client_session
        # Per execution, not only per tick: a log level changed since then counts at once.
        self._debug_messages = debug_logged(self.log)
        self.log.debug(
            "jupyter_persist: execute_request %s for cell %s on kernel %s",
            request.msg_id,
            request.cell_id,
            kernel_id,
        )
        self._spawn(self._locate_then_write(execution))

    # -- IOPub side ------------------------------------------------------------------

    def on_iopub(self, kernel_id: str, msg: dict[str, Any]) -> None:
        """Apply one IOPub message; never raises."""
        try:
            parent = msg.get("parent_header") or {}
            msg_id = parent.get("msg_id")
            msg_type = msg["header"]["msg_type"]
            if not msg_id:
                return
            execution = self.store.get(msg_id)
            if execution is None:
                if parent.get("msg_type") != "execute_request" or msg_type == "status":
                    return
                # Executed by a client we did not see (another websocket class, a ZMQ client).
                execution = self.store.begin(kernel_id, msg_id)
            if msg_type == "execute_input" and execution.code is None:
                execution.code = msg["content"].get("code")
                if execution.cell_id is None or execution.path is None:
                    self._spawn(self._locate_then_write(execution))
            # Only the page that started a run shows it: once that page is gone, its
            # messages are the server's to keep, even with other pages attached.
            detached = not self.owner_attached(execution)
            if not execution.notebookless:
                self.recorder.feed(execution, msg)
            self.store.apply(msg, detached=detached)
            if msg_type in OUTPUT_MSG_TYPES:
                execution.received_chars += output_message_size(msg_type, msg["content"])
            if self._debug_messages:
                self.log.debug(
                    "jupyter_persist: %s for %s (kernel %s)", msg_type, msg_id, kernel_id
                )
            if msg_type == "status" and not execution.running:
                self._execution_finished(execution, detached)
        except Exception as err:
            self.log.debug("jupyter_persist: ignored a malformed %s message: %r", kernel_id, err)

    def _execution_finished(self, execution: Execution, detached: bool) -> None:
        if execution.notebookless:
            self.store.forget(execution)
            self.recorder.forget(execution)
        elif detached and execution.placed and execution.path is not None:
            self._spawn(self.flush(execution.path))

    async def _locate_then_write(self, execution: Execution) -> None:
        """Place an execution in its notebook cell; write it if it already finished."""
        placed = await self.locator.locate(execution)
        if placed and execution.path is not None:
            paths = self._notebooks.setdefault(execution.kernel_id, set())
            if execution.path not in paths:
                paths.add(execution.path)
                self.log.info(
                    "jupyter_persist: capturing outputs of %s (kernel %s)",
                    execution.path,
                    execution.kernel_id,
                )
        if execution.notebookless and not execution.running:
            self.recorder.forget(execution)
        if placed and not execution.running and not self.attached(execution.kernel_id):
            await self.flush(str(execution.path))

    # -- writing ---------------------------------------------------------------------

    async def _tick(self) -> None:
        try:
            self._debug_messages = debug_logged(self.log)
            known = set(self.kernel_manager.list_kernel_ids())
            for kernel_id in known:
                # Also re-subscribes a kernel whose ports changed in a restart.
                self._track_kernel(kernel_id)
            for kernel_id in self.listener.kernel_ids - known:
                self._kernel_gone(kernel_id)
            correct_missed_idle(self.kernel_manager, self.listener, self.log)
            await self.locator.follow_sessions()
            await self.flush_all(spread=self.save_interval / 2)
        except Exception:
            self.log.exception("jupyter_persist: error in the flush loop")

    async def flush_all(self, spread: float = 0.0) -> None:
        """Write every notebook with unwritten outputs whose kernel has no client attached.

        The flush loop spreads the writes (see ``Flusher.flush_all``); a stop does not.
        """
        await self.flusher.flush_all(
            ignore_clients=self._stopping, spread=0.0 if self._stopping else spread
        )

    async def flush(self, path: str) -> None:
        """Write the unwritten outputs of one notebook, unless a client owns it now."""
        await self.flusher.flush(path, ignore_clients=self._stopping)

    async def flush_now(self, path: str | None = None) -> dict[str, str]:
        """Journal everything now and write one notebook (or all) without waiting.

        For the REST API: skips the write pacing, but still never writes a notebook an
        attached client owns. Returns each notebook's outcome (see ``Flusher.flush``).
        """
        self.recorder.tick()
        paths = [path] if path is not None else sorted(self.store.paths_to_write())
        return {p: await self.flusher.flush(p, ignore_pause=True) for p in paths}

    async def _find_room(self, path: str) -> Any | None:
        if self.web_settings is None:
            return None
        return await open_room_document(self.web_settings, path)

    def captured_paths(self) -> set[str]:
        """Notebooks with outputs tracked in memory."""
        return {e.path for e in self.store.executions() if e.path is not None}


def debug_logged(log: Any) -> bool:
    """Whether a DEBUG record reaches any handler of ``log``.

    jupyter_server's logger is at DEBUG with its handler at the configured level, so a
    disabled ``log.debug`` call still builds a record; per message, that costs more than
    handling the message.
    """
    if not isinstance(log, logging.Logger) or not log.isEnabledFor(logging.DEBUG):
        return isinstance(log, logging.LoggerAdapter) and log.isEnabledFor(logging.DEBUG)
    logger: logging.Logger | None = log
    while logger is not None:
        if any(handler.level <= logging.DEBUG for handler in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False
