"""Glue between the kernels, the websocket, the in-memory store and the notebook writer.

Decides *when* outputs are written: never while a client is attached to the notebook's
kernel (the open editor owns the file), and, once none is, within ``save_interval``,
then every ``save_interval`` while output arrives, when an execution ends, when its
kernel restarts or stops, and when the server stops.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from tornado.ioloop import PeriodicCallback
from traitlets import Any as AnyTrait
from traitlets import Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from .guard import reconcile_save
from .journal import Journal
from .listener import KernelListener
from .locator import ExecutionLocator
from .recovery import restore_journals
from .store import CaptureStore, Execution
from .textlog import TextLog
from .websocket import ExecuteRequest
from .writer import CellUpdate, NotebookUnavailable, NotebookWriter

KERNEL_ACTIONS_SCHEMA = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
CONTENTS_SCHEMA = "https://events.jupyter.org/jupyter_server/contents_service/v1"


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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = CaptureStore()
        self.listener = KernelListener(
            on_message=self.on_iopub, kernel_manager=self.kernel_manager, parent=self
        )
        self.writer = NotebookWriter(contents_manager=self.contents_manager, parent=self)
        self.journal = Journal(Path(self.state_dir) / "journals", parent=self)
        self.text_log = (
            TextLog(Path(self.text_log_dir), self.text_log_max_bytes, parent=self)
            if self.text_log_dir
            else None
        )
        self.locator = ExecutionLocator(
            self.store, self.writer, session_manager=self.session_manager, parent=self
        )
        self._clients: Counter[str] = Counter()
        self._restart_callbacks: dict[str, tuple[Any, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._warned: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: PeriodicCallback | None = None
        self._journal_loop: PeriodicCallback | None = None
        self._journal_paths: set[str] = set()
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the flush and journal loops (idempotent; needs a running event loop).

        Journals a previous server left behind are merged into their notebooks first.
        """
        if self._loop is None:
            self._loop = PeriodicCallback(self._tick, self.save_interval * 1000)
            self._loop.start()
            self._spawn(self._start_journal())
            for kernel_id in self.kernel_manager.list_kernel_ids():
                self._track_kernel(kernel_id)

    async def _start_journal(self) -> None:
        try:
            self.journal.ensure_directory()
            if self.text_log is not None:
                self.text_log.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            await restore_journals(self.journal, self.writer, self.log)
        except OSError as err:
            self.log.warning(
                "jupyter_persist: journal unavailable (%s); outputs not journaled", err
            )
            return
        if not self._stopping:
            self._journal_loop = PeriodicCallback(self._journal_tick, self.journal_interval * 1000)
            self._journal_loop.start()

    def _journal_tick(self) -> None:
        """Append what changed; drop the journals of notebooks whose outputs are all saved."""
        try:
            placed = [e for e in self.store.executions() if e.placed]
            self.journal.append(placed)
            if self.text_log is not None:
                self.text_log.append(placed)
            current = {str(e.path) for e in placed}
            pending = {str(e.path) for e in placed if e.dirty or e.running}
            for path in (self._journal_paths | current) - pending:
                self.journal.remove(path)
            self._journal_paths = pending
        except Exception:
            self.log.exception("jupyter_persist: error writing the journal")

    async def stop(self) -> None:
        """Release every kernel subscription, journal and write everything still unwritten."""
        self._stopping = True
        for loop in (self._loop, self._journal_loop):
            if loop is not None:
                loop.stop()
        self._loop = self._journal_loop = None
        for kernel_id in list(self.listener.kernel_ids):
            self._untrack_kernel(kernel_id)
        self.listener.close()
        if self.journal.directory.is_dir():
            self._journal_tick()
        await self.flush_all()
        if self.journal.directory.is_dir():
            self._journal_tick()

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
        self._clients.pop(kernel_id, None)
        self.locator.forget_kernel(kernel_id)
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

    def client_attached(self, kernel_id: str) -> None:
        """A client websocket connected to a kernel."""
        self._clients[kernel_id] += 1

    def client_detached(self, kernel_id: str) -> None:
        """A client websocket left; from the last one on, the server writes the outputs."""
        self._clients[kernel_id] -= 1
        if self._clients[kernel_id] > 0:
            return
        del self._clients[kernel_id]
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

    def attached(self, kernel_id: str) -> bool:
        """Whether any client websocket is attached to the kernel."""
        return self._clients[kernel_id] > 0

    def on_execute_request(self, kernel_id: str, request: ExecuteRequest) -> None:
        """A client asked a kernel to execute code (seen on the kernel websocket)."""
        execution = self.store.begin(kernel_id, request.msg_id, request.cell_id, request.code)
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
            detached = not self._clients[kernel_id]
            self.store.apply(msg, detached=detached)
            self.log.debug("jupyter_persist: %s for %s (kernel %s)", msg_type, msg_id, kernel_id)
            if msg_type == "status" and not execution.running:
                self._execution_finished(execution, detached)
        except Exception as err:
            self.log.debug("jupyter_persist: ignored a malformed %s message: %r", kernel_id, err)

    def _execution_finished(self, execution: Execution, detached: bool) -> None:
        if execution.notebookless:
            self.store.forget(execution)
        elif detached and execution.placed and execution.path is not None:
            self._spawn(self.flush(execution.path))

    async def _locate_then_write(self, execution: Execution) -> None:
        """Place an execution in its notebook cell; write it if it already finished."""
        placed = await self.locator.locate(execution)
        if placed and not execution.running and not self.attached(execution.kernel_id):
            await self.flush(str(execution.path))

    # -- saves -----------------------------------------------------------------------

    def on_pre_save(self, model: dict[str, Any], path: str, **kwargs: Any) -> None:
        """ContentsManager pre-save hook: the save guard (see :mod:`jupyter_persist.guard`).

        Runs for every save (a browser's, ours, any API client's). It gives cells the
        captured outputs a stale tab did not have, and learns which outputs the file holds.
        """
        try:
            if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
                return
            cells = model["content"].get("cells")
            if not isinstance(cells, list):
                return
            report = reconcile_save(self.store, path.strip("/"), cells)
            for execution in report.restored:
                self.log.info(
                    "jupyter_persist: a save of %s lacked captured outputs of cell %s; kept them",
                    path,
                    execution.cell_id,
                )
            for execution in report.cleared:
                self.log.info(
                    "jupyter_persist: outputs of cell %s of %s cleared by the user",
                    execution.cell_id,
                    path,
                )
        except Exception as err:
            self.log.warning("jupyter_persist: could not check a save of %s: %s", path, err)

    # -- writing ---------------------------------------------------------------------

    async def _tick(self) -> None:
        try:
            known = set(self.kernel_manager.list_kernel_ids())
            for kernel_id in known:
                # Also re-subscribes a kernel whose ports changed in a restart.
                self._track_kernel(kernel_id)
            for kernel_id in self.listener.kernel_ids - known:
                self._kernel_gone(kernel_id)
            await self.locator.follow_sessions()
            await self.flush_all()
        except Exception:
            self.log.exception("jupyter_persist: error in the flush loop")

    async def flush_all(self) -> None:
        """Write every notebook with unwritten outputs whose kernel has no client attached."""
        for path in sorted(self.store.paths_to_write()):
            await self.flush(path)

    async def flush(self, path: str) -> None:
        """Write the unwritten outputs of one notebook, unless a client owns it now."""
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            try:
                await self._write(path)
            except Exception:
                self.log.exception("jupyter_persist: error writing %s", path)

    async def _write(self, path: str) -> None:
        executions = self.store.to_write(path)
        if not executions:
            return
        if not self._stopping and any(self.attached(e.kernel_id) for e in executions):
            return
        versions = {e.cell_id: (e, e.version) for e in executions if e.cell_id is not None}
        updates = {
            cell_id: CellUpdate(e.area.to_json(), e.area.execution_count)
            for cell_id, (e, _) in versions.items()
        }
        try:
            result = await self.writer.merge(path, updates)
        except NotebookUnavailable as err:
            self._warn_once(
                path, f"jupyter_persist: not writing {path}: {err}; outputs kept in memory"
            )
            return
        self._warned.pop(path, None)
        for cell_id in result.merged:
            execution, version = versions[cell_id]
            execution.written_version = version
        if result.missing:
            self._warn_once(
                path,
                f"jupyter_persist: {len(result.missing)} cell(s) of {path} no longer exist "
                f"({', '.join(sorted(result.missing))}); their outputs are kept in memory",
            )
        if result.saved:
            self.log.info(
                "jupyter_persist: wrote %s (%d cell(s), %d bytes, %.0f ms)",
                path,
                len(result.merged),
                result.bytes,
                result.seconds * 1000,
            )

    def _warn_once(self, path: str, message: str) -> None:
        if self._warned.get(path) != message:
            self._warned[path] = message
            self.log.warning("%s", message)
