"""Which kernels run: subscribing to each, and hearing of their restarts and deaths.

The kernel manager's own events (jupyter_server's ``kernel_actions``), its restart
callbacks, and a regular look at its list of kernels (a kernel culled or stopped behind
the events' back) all end in one of three calls of the owner: a kernel to capture, a
kernel restarted, a kernel gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from traitlets import Any as AnyTrait
from traitlets.config import LoggingConfigurable

from .listener import KernelListener

KERNEL_ACTIONS_SCHEMA = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"


class KernelTracker(LoggingConfigurable):
    """Keeps one IOPub subscription per running kernel and reports lifecycle changes."""

    kernel_manager = AnyTrait(help="The server's MultiKernelManager.")

    def __init__(
        self,
        listener: KernelListener,
        on_start: Callable[[], None],
        on_restarted: Callable[[str], None],
        on_gone: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.listener = listener
        #: Called before a started kernel is tracked (starts the owner's loops).
        self.on_start = on_start
        self.on_restarted = on_restarted
        self.on_gone = on_gone
        self._restart_callbacks: dict[str, tuple[Any, Any]] = {}

    async def on_kernel_action(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        """Follow kernel starts, restarts and shutdowns (jupyter_server's kernel events)."""
        kernel_id = data.get("kernel_id")
        if not kernel_id or data.get("status") != "success":
            return
        action = data.get("action")
        try:
            if action == "start":
                self.on_start()
                self.track(kernel_id)
            elif action == "restart":
                self.on_restarted(kernel_id)
            elif action == "shutdown":
                self.on_gone(kernel_id)
        except Exception:
            self.log.exception("jupyter_persist: error following kernel %s %s", action, kernel_id)

    def track(self, kernel_id: str) -> None:
        """Subscribe to the kernel's IOPub and its restarts (idempotent; retried by reconcile)."""
        if not self.listener.attach(kernel_id):
            return
        if kernel_id in self._restart_callbacks:
            return
        self.log.info("jupyter_persist: capturing outputs of kernel %s", kernel_id)

        # The kernel restarter calls these synchronously: nothing may escape them.
        def on_restart() -> None:
            try:
                self.on_restarted(kernel_id)
            except Exception:
                self.log.exception("jupyter_persist: error following a restart of %s", kernel_id)

        def on_dead() -> None:
            try:
                self.on_gone(kernel_id)
            except Exception:
                self.log.exception("jupyter_persist: error following the death of %s", kernel_id)

        self.kernel_manager.add_restart_callback(kernel_id, on_restart, "restart")
        self.kernel_manager.add_restart_callback(kernel_id, on_dead, "dead")
        self._restart_callbacks[kernel_id] = (on_restart, on_dead)

    def untrack(self, kernel_id: str) -> None:
        """Drop the kernel's subscription and restart callbacks."""
        self.listener.detach(kernel_id)
        callbacks = self._restart_callbacks.pop(kernel_id, None)
        if callbacks is not None and kernel_id in self.kernel_manager:
            try:
                self.kernel_manager.remove_restart_callback(kernel_id, callbacks[0], "restart")
                self.kernel_manager.remove_restart_callback(kernel_id, callbacks[1], "dead")
            except Exception as err:
                self.log.debug("jupyter_persist: removing restart callbacks: %s", err)

    def resubscribe(self, kernel_id: str) -> None:
        """The kernel restarted: its new ports get a new subscription."""
        self.listener.attach(kernel_id)
        self.listener.mark_restarting(kernel_id)

    def reconcile(self) -> None:
        """Track every kernel the manager runs; report the tracked ones it no longer runs.

        Also re-subscribes a kernel whose ports changed in a restart.
        """
        known = set(self.kernel_manager.list_kernel_ids())
        for kernel_id in known:
            self.track(kernel_id)
        for kernel_id in self.listener.kernel_ids - known:
            self.on_gone(kernel_id)

    def untrack_all(self) -> None:
        """The server stops: every subscription goes."""
        for kernel_id in list(self.listener.kernel_ids):
            self.untrack(kernel_id)
        self.listener.close()

    async def until_capturing(self, kernel_id: str) -> None:
        """Return once the kernel's IOPub subscription receives messages (or after 10 s).

        At once for a kernel the manager no longer runs (shut down meanwhile).
        """
        try:
            if kernel_id not in self.kernel_manager:
                return
            self.track(kernel_id)
            if not await self.listener.wait_live(kernel_id, timeout=10):
                self.log.warning(
                    "jupyter_persist: no IOPub message from kernel %s in 10 s; outputs of its "
                    "first execution may be missed",
                    kernel_id,
                )
        except Exception:
            self.log.exception("jupyter_persist: error waiting for kernel %s", kernel_id)
