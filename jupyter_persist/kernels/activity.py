"""Keep kernels' activity for the server from our own subscription.

jupyter_server watches every kernel's IOPub with a subscription of its own
(``MappingKernelManager.start_watching_activity``): for each message, on the event
loop, it deserializes the message (dates parsed) and sets the kernel's
``last_activity`` and ``execution_state``, which ``GET /api/kernels`` reports and the
idle culler decides on. With many busy kernels that watcher and its socket are most of
the loop's time, with or without the extension (docs/benchmarks.md, "The 20 kernels
profiled again"). Our subscription reads every message already, off the loop, and
drops none. While it is live for a kernel, it keeps those fields by the watcher's own
rules and the watcher is stopped; whenever ours may miss messages (a restart, a new
IOPub reader, the end of the subscription) the server's watcher is started again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import zmq
from jupyter_server._tz import utcnow
from tornado.ioloop import IOLoop

from .lookup import find_kernel


class ActivityKeeper:
    """Sets ``last_activity`` and ``execution_state`` of the kernels it took over.

    Called on the event loop only. ``record`` gets each kernel's messages in the order
    the kernel published them.
    """

    def __init__(self, kernel_manager: Any, log: Any, enabled: bool = True) -> None:
        self.kernel_manager = kernel_manager
        self.log = log
        self.enabled = enabled
        #: Kernels whose activity we keep: id → the kernel manager of that kernel.
        self._kept: dict[str, Any] = {}

    @property
    def kernel_ids(self) -> set[str]:
        """The kernels whose activity we keep now."""
        return set(self._kept)

    def take_over(self, kernel_id: str) -> None:
        """Stop the server's watcher of a kernel and keep its activity from now on.

        Only a kernel with a watcher of jupyter_server's kind (a local kernel's
        ``_activity_stream``); what that watcher received and did not handle yet is
        handled first, by the server's own code.
        """
        if not self.enabled or kernel_id in self._kept:
            return
        stop = getattr(self.kernel_manager, "stop_watching_activity", None)
        start = getattr(self.kernel_manager, "start_watching_activity", None)
        kernel = find_kernel(self.kernel_manager, kernel_id)
        stream = getattr(kernel, "_activity_stream", None)
        if not (callable(stop) and callable(start)) or stream is None:
            return
        try:
            # A synchronous kernel manager's watcher belongs to another loop's thread.
            if not stream.closed() and getattr(stream, "io_loop", None) is IOLoop.current():
                stream.flush(zmq.POLLIN)
            stop(kernel_id)
        except Exception:
            self.log.exception(
                "jupyter_persist: could not stop the server's activity watcher of kernel %s",
                kernel_id,
            )
            return
        self._kept[kernel_id] = kernel
        self.log.debug("jupyter_persist: keeping the activity of kernel %s", kernel_id)

    def hand_back(self, kernel_id: str) -> None:
        """Start the server's watcher of a kernel again (if it still runs)."""
        kernel: Any = self._kept.pop(kernel_id, None)
        still_runs = kernel is not None and find_kernel(self.kernel_manager, kernel_id) is kernel
        if not still_runs:
            return
        if getattr(kernel, "_activity_stream", None) is not None:
            return  # the server started one itself (a restart with new ports)
        # Starting a watcher sets both as for a new kernel; neither happened now.
        last_activity, reason = kernel.last_activity, getattr(kernel, "reason", "")
        try:
            self.kernel_manager.start_watching_activity(kernel_id)
        except Exception:
            self.log.exception(
                "jupyter_persist: could not restart the server's activity watcher of kernel %s",
                kernel_id,
            )
        finally:
            kernel.last_activity, kernel.reason = last_activity, reason
        self.log.debug("jupyter_persist: handed the activity of kernel %s back", kernel_id)

    def hand_back_all(self) -> None:
        for kernel_id in list(self._kept):
            self.hand_back(kernel_id)

    def record(self, kernel_id: str, messages: Iterable[dict[str, Any]]) -> None:
        """What jupyter_server's ``record_activity`` does with each of these messages."""
        kernel = self._kept.get(kernel_id)
        if kernel is None:
            return
        tracked = self.kernel_manager.track_message_type
        active = False
        for msg in messages:
            msg_type = msg["header"].get("msg_type")
            parent = msg.get("parent_header")
            parent_type = None if parent is None else parent.get("msg_type")
            if tracked(msg_type) or tracked(parent_type) or kernel.execution_state == "busy":
                active = True
            if msg_type != "status":
                continue
            state = msg["content"].get("execution_state")
            if tracked(parent_type):
                kernel.execution_state = state
            elif kernel.execution_state == "starting" and state != "starting":
                kernel.execution_state = "idle"  # as the server normalizes it
        if active:
            self.kernel_manager.last_kernel_activity = kernel.last_activity = utcnow()
