"""What the kernel websocket tells the capture: clients come, run code, leave, come back.

The websocket hooks (``kernels/websocket.py``) call these; they keep the count of
attached clients, hand execute requests to the router, hold a connecting client until
the kernel's IOPub subscription is live, bring rooms up to date before a returning
client's replay, and say when a kernel waits for input nobody can give.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from traitlets import Any as AnyTrait
from traitlets import Float, Integer
from traitlets.config import LoggingConfigurable

from ..kernels.clients import AttachedClients
from ..kernels.lifecycle import KernelTracker
from ..kernels.replay import buffer_to_replay
from ..kernels.standin import BusyKernelWidgets
from ..kernels.websocket import ExecuteRequest
from ..model.store import CaptureStore
from ..model.widgets import manager_states
from ..storage.flusher import Flusher
from ..storage.recorder import Recorder
from ..storage.room import outputs_held_by_rooms
from .router import Router


class ClientEvents(LoggingConfigurable):
    """The kernel websocket's side of the capture (``kernels.websocket.CaptureSink``)."""

    kernel_manager = AnyTrait(help="The server's MultiKernelManager.")
    save_interval = Float(5.0, help="Seconds between writes (for the log line).")
    replay_buffer_max_bytes = Integer(0, help="Replay buffer bound (see PersistExtension).")

    def __init__(
        self,
        clients: AttachedClients,
        router: Router,
        kernels: KernelTracker,
        store: CaptureStore,
        *,
        flusher: Flusher,
        recorder: Recorder,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.clients = clients
        self.router = router
        self.kernels = kernels
        self.store = store
        self.flusher = flusher
        self.recorder = recorder
        self.spawn = spawn

    def on_execute_request(self, kernel_id: str, request: ExecuteRequest) -> None:
        """A client asked a kernel to execute code."""
        self.router.on_execute_request(kernel_id, request)

    def widgets_while_busy(self, kernel_id: str) -> BusyKernelWidgets | None:
        """Every widget of a kernel that runs a cell, for a page asking it; else None.

        Between cells the kernel answers itself at once: it is the authority on its
        widgets.
        """
        listener = self.kernels.listener
        if kernel_id not in listener.kernel_ids:
            return None
        listener.catch_up()  # what the kernel sent so far, also what the page has seen
        running = [e for e in self.store.executions(kernel_id) if e.running]
        models = self.store.widgets.models_of(kernel_id)
        if not running or not models:
            return None
        latest = max(running, key=lambda e: e.seq)
        return BusyKernelWidgets(manager_states(models), latest.msg_id, latest.client_session or "")

    def client_attached(self, kernel_id: str, session: str = "") -> None:
        """A client websocket connected to a kernel (``session``: its client session id)."""
        self.clients.attach(kernel_id, session)

    def client_detached(self, kernel_id: str, session: str = "") -> None:
        """A client websocket left; from the last one on, the server writes the outputs."""
        remaining = self.clients.detach(kernel_id, session)
        gone = not self.clients.has_session(kernel_id, session)
        unsaved = self.store.client_left(kernel_id, session, gone, remaining > 0)
        if remaining == 0 and unsaved:
            self.log.info(
                "jupyter_persist: last client left kernel %s; %d execution(s) it did not save "
                "will be written within %ss",
                kernel_id,
                unsaved,
                self.save_interval,
            )

    async def until_capturing(self, kernel_id: str) -> None:
        """Return once the kernel's IOPub subscription receives messages (or after 10 s)."""
        await self.kernels.until_capturing(kernel_id)

    async def before_replay(self, kernel_id: str, session_key: str) -> None:
        """A client comes back to the session the server kept messages for: rooms first."""
        try:
            buffer = buffer_to_replay(self.kernel_manager, kernel_id, session_key)
            if buffer is not None:
                self.kernels.listener.catch_up()
                executions = list(self.store.executions(kernel_id))
                held = await outputs_held_by_rooms(executions, self.flusher.flush_into_room)
                buffer.skip_outputs_of = held
        except Exception:
            self.log.exception("jupyter_persist: error before replaying kernel %s", kernel_id)

    def on_input_request(self, kernel_id: str, msg: dict[str, Any]) -> None:
        """A kernel asks for input while no client is attached: say so, write what ran."""
        try:
            execution = self.store.get((msg.get("parent_header") or {}).get("msg_id", ""))
            prompt = str((msg.get("content") or {}).get("prompt", ""))
            self.recorder.note_input_request(kernel_id, execution, prompt)
            if execution is not None and execution.path is not None:
                self.spawn(self.flusher.flush(execution.path))
        except Exception:
            self.log.exception("jupyter_persist: error noting an input request")
