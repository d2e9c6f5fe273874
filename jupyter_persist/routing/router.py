"""Messages to executions: what a client asked to run, and what the kernel sent back.

The ``execute_request`` a client sends over the kernel websocket names the cell
(``cellId``) and the client session; the kernel's IOPub messages name that request as
their parent. Each message goes to its execution in the store, the journal and the
text log; an execution gets its notebook and cell from the locator, and is written once
it ends with nobody attached to save it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from traitlets.config import LoggingConfigurable

from ..kernels.websocket import ExecuteRequest
from ..logs import debug_logged
from ..model.caps import output_message_size
from ..model.store import CaptureStore, Execution, Released
from ..storage.flusher import Flusher
from ..storage.recorder import Recorder
from .locator import ExecutionLocator

OUTPUT_MSG_TYPES = frozenset(
    {"stream", "display_data", "update_display_data", "execute_result", "error"}
)
COMM_MSG_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})


class Router(LoggingConfigurable):
    """Routes execute requests and IOPub messages to the store and the recorder."""

    def __init__(
        self,
        store: CaptureStore,
        recorder: Recorder,
        locator: ExecutionLocator,
        flusher: Flusher,
        *,
        owner_attached: Callable[[Execution], bool],
        attached: Callable[[str], bool],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.recorder = recorder
        self.locator = locator
        self.flusher = flusher
        #: Whether the client that started an execution is attached.
        self.owner_attached = owner_attached
        #: Whether any client is attached to a kernel.
        self.attached = attached
        self.spawn = spawn
        #: Notebooks each kernel's outputs went to, for the log lines of start and stop.
        self.notebooks: dict[str, set[str]] = {}
        #: Late messages of released runs, waiting for their outputs to be read back.
        self._reviving: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.debug_messages = debug_logged(self.log)

    def on_execute_request(self, kernel_id: str, request: ExecuteRequest) -> None:
        """A client asked a kernel to execute code (seen on the kernel websocket)."""
        execution = self.store.begin(kernel_id, request.msg_id, request.cell_id, request.code)
        execution.client_session = request.client_session
        # Per execution, not only per tick: a log level changed since then counts at once.
        self.debug_messages = debug_logged(self.log)
        self.log.debug(
            "jupyter_persist: execute_request %s for cell %s on kernel %s",
            request.msg_id,
            request.cell_id,
            kernel_id,
        )
        self.spawn(self._locate_then_write(execution))

    def on_iopub(self, kernel_id: str, msg: dict[str, Any]) -> None:
        """Apply one IOPub message; never raises."""
        try:
            parent = msg.get("parent_header") or {}
            msg_id = parent.get("msg_id")
            msg_type = msg["header"]["msg_type"]
            if msg_type in COMM_MSG_TYPES:
                self._on_comm(kernel_id, msg)
                return
            if not msg_id:
                return
            execution = self.store.get(msg_id)
            if execution is None:
                if parent.get("msg_type") != "execute_request" or msg_type == "status":
                    return
                if self.store.was_replaced(msg_id):
                    return  # a later run of its cell replaced it: JupyterLab drops these too
                released = self.store.released(msg_id)
                if released is not None or msg_id in self._reviving:
                    self._revive_then_apply(kernel_id, msg_id, released, msg)
                    return
                # Executed by a client we did not see (another websocket class, a ZMQ client).
                execution = self.store.begin(kernel_id, msg_id)
            if msg_type == "execute_input" and execution.code is None:
                execution.code = msg["content"].get("code")
                if execution.cell_id is None or execution.path is None:
                    self.spawn(self._locate_then_write(execution))
            # Only the page that started a run shows it: once that page is gone, its
            # messages are the server's to keep, even with other pages attached.
            detached = not self.owner_attached(execution)
            if not execution.notebookless:
                self.recorder.feed(execution, msg)
            self.store.apply(msg, detached=detached)
            if msg_type in OUTPUT_MSG_TYPES:
                execution.received_chars += output_message_size(msg_type, msg["content"])
            if self.debug_messages:
                self.log.debug(
                    "jupyter_persist: %s for %s (kernel %s)", msg_type, msg_id, kernel_id
                )
            if msg_type == "status" and not execution.running:
                self._execution_finished(execution, detached)
        except Exception as err:
            self.log.debug("jupyter_persist: ignored a malformed %s message: %r", kernel_id, err)

    def _revive_then_apply(
        self, kernel_id: str, msg_id: str, released: Released | None, msg: dict[str, Any]
    ) -> None:
        """A late message of a released run: read its outputs back first, then apply."""
        waiting = self._reviving.get(msg_id)
        if waiting is not None:
            waiting.append((kernel_id, msg))
            return
        assert released is not None
        self._reviving[msg_id] = [(kernel_id, msg)]
        self.spawn(self._revive(released))

    async def _revive(self, released: Released) -> None:
        outputs = None
        try:
            found = await self.flusher.writer.cell_outputs(released.path, {released.cell_id})
            outputs = found.get(released.cell_id)
            if outputs is None:
                self.log.warning(
                    "jupyter_persist: cell %s is no longer in %s; its late output is kept "
                    "on its own",
                    released.cell_id,
                    released.path,
                )
        except Exception as err:
            self.log.warning(
                "jupyter_persist: could not read the saved outputs of cell %s of %s (%s); "
                "its late output is kept on its own",
                released.cell_id,
                released.path,
                err,
            )
        waiting = self._reviving.pop(released.msg_id, [])
        try:
            if self.store.revive(released, outputs) is None:
                return  # a later run replaced it meanwhile: dropped, as JupyterLab does
            for kernel_id, msg in waiting:
                self.on_iopub(kernel_id, msg)
        except Exception:
            self.log.exception("jupyter_persist: error applying late output of %s", released.msg_id)

    def _on_comm(self, kernel_id: str, msg: dict[str, Any]) -> None:
        """A widget's state changed: the executions it concerns have news to write.

        Widget state is the kernel's, not an execution's. Written, state and all, under
        the usual rules (a change after the run ended waits for the next tick, not one
        write each): the execution named as the message's parent (the cell whose code
        made the change, a running loop drawing its progress bar); where that is not a
        cell's run, the one whose code created the widget; where neither is, every
        notebook showing a widget of the kernel. ipykernel names, for a thread's
        messages, the last shell request of any client, so once a page has asked the
        kernel anything (its ``kernel_info_request``, its widget manager's
        ``comm_info_request``), a thread's progress bar names that request, not its cell.
        """
        # Before the message applies: a comm_close forgets the model.
        opener_id = self.store.widgets.opener(kernel_id, msg["content"]["comm_id"])
        if not self.store.widgets.apply(kernel_id, msg):
            return
        parent_id = (msg.get("parent_header") or {}).get("msg_id")
        parent = self.store.get(parent_id) if isinstance(parent_id, str) else None
        if parent is not None and parent.kernel_id == kernel_id:
            # The run that made the change: its outputs, bars and all, are its own.
            parent.version += 1
            if not self.owner_attached(parent):
                parent.server_owned = True
            if not parent.notebookless:
                self.recorder.widgets_changed(parent)
                return  # a cell's run (or one still being placed): its notebook is written
        # Only the notebooks' widget state changes: those runs' outputs stay whose they
        # were (no ownership, no text log lines of bars that did not move).
        opener = self.store.get(opener_id) if isinstance(opener_id, str) else None
        if opener is not None and opener.kernel_id == kernel_id and not opener.notebookless:
            opener.version += 1
            return
        self.store.widgets_changed(kernel_id)

    def forget_kernel(self, kernel_id: str) -> list[str]:
        """The kernel is gone: the notebooks its outputs went to."""
        self.locator.forget_kernel(kernel_id)
        return sorted(self.notebooks.pop(kernel_id, ()))

    def _execution_finished(self, execution: Execution, detached: bool) -> None:
        if execution.notebookless:
            self.store.forget(execution)
            self.recorder.forget(execution)
        elif detached and execution.placed and execution.path is not None:
            self.spawn(self.flusher.flush(execution.path, run_ended=True))

    async def _locate_then_write(self, execution: Execution) -> None:
        """Place an execution in its notebook cell; write it if it already finished."""
        placed = await self.locator.locate(execution)
        if placed and execution.path is not None:
            paths = self.notebooks.setdefault(execution.kernel_id, set())
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
            await self.flusher.flush(str(execution.path), run_ended=True)
