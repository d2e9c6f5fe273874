"""Keep kernels' activity for the server from our own subscription.

jupyter_server watches every kernel's IOPub with a subscription of its own
(``MappingKernelManager.start_watching_activity``): for each message, on the event
loop, it deserializes the message (dates parsed) and sets the kernel's
``last_activity`` and ``execution_state``, which ``GET /api/kernels`` reports and the
idle culler decides on. With many busy kernels that watcher and its socket are most of
the loop's time, with or without the extension (docs/benchmarks.md, "The 20 kernels
profiled again"). Our reader stands in for it: beside each kernel's capture socket
(unbounded, read in order, which a flood puts seconds behind) it reads an activity
lane, bounded as the watcher's socket is and read every turn, off the loop, and hands
the server what the watcher's rules need of each message. While our subscription is
live for a kernel, those fields are kept by the watcher's own rules and the watcher is
stopped; whenever ours may miss messages (a restart, a new IOPub reader, the end of the
subscription) the server's watcher is started again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import zmq
from jupyter_server._tz import utcnow
from tornado.ioloop import IOLoop

from .lookup import find_kernel

#: Messages the server's watcher handles of its queue before it stops (a flood can
#: leave 1,000 there; our subscription, live by then, has the recent ones too).
FLUSH_LIMIT = 100


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
        kernel: Any = find_kernel(self.kernel_manager, kernel_id)
        stream = getattr(kernel, "_activity_stream", None)
        if not callable(getattr(self.kernel_manager, "start_watching_activity", None)):
            return
        # A synchronous kernel manager's watcher is read by jupyter_core's runner thread:
        # its socket is not ours to close from this one.
        if stream is None or getattr(stream, "io_loop", None) is not IOLoop.current():
            return
        try:
            if not stream.closed():
                stream.flush(zmq.POLLIN, FLUSH_LIMIT)
                stream.close()
            # Not the manager's stop_watching_activity: during a restart that also ends
            # the restart's wait for the new process's reply, and the restart never returns.
            kernel._activity_stream = None
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

    def record(self, kernel_id: str, records: Iterable[Any]) -> None:
        """What jupyter_server's ``record_activity`` does with each of these messages,
        as an activity lane reads them: (msg_type, the parent's msg_type, a status's
        execution_state or None)."""
        kernel = self._kept.get(kernel_id)
        if kernel is None:
            return
        try:
            self._record(kernel, records)
        except Exception:  # a malformed message must not stop the messages after it
            self.log.exception(
                "jupyter_persist: error following the activity of kernel %s", kernel_id
            )

    def record_captured(self, kernel_id: str, messages: list[dict[str, Any]]) -> None:
        """What ``record_activity`` does with these messages of the capture: moves
        ``last_activity`` only.

        Once a kernel's lane has narrowed to its statuses' topic, the kernel's outputs
        reach the server only this way, in order, and seconds late under a flood
        (``last_activity`` then moves as they are handled, which is when jupyter_server's
        own watcher, behind the same flood, would move it too). The state is never
        set from here: the lane has the kernel's statuses first.
        """
        kernel = self._kept.get(kernel_id)
        if kernel is None or not messages:
            return
        try:
            if any(
                self._moves_activity(
                    kernel,
                    msg["header"].get("msg_type"),
                    (msg.get("parent_header") or {}).get("msg_type"),
                )
                for msg in messages
            ):
                self.kernel_manager.last_kernel_activity = kernel.last_activity = utcnow()
        except Exception:
            self.log.exception(
                "jupyter_persist: error following the activity of kernel %s", kernel_id
            )

    def _moves_activity(self, kernel: Any, msg_type: Any, parent_type: Any) -> bool:
        """Whether a message moves ``last_activity`` by jupyter_server's rule."""
        tracked = self.kernel_manager.track_message_type
        return bool(tracked(parent_type) or tracked(msg_type) or kernel.execution_state == "busy")

    def _record(self, kernel: Any, records: Iterable[Any]) -> None:
        tracked = self.kernel_manager.track_message_type
        active = False
        for msg_type, parent_type, state in records:
            if self._moves_activity(kernel, msg_type, parent_type):
                active = True
            if msg_type != "status":
                continue
            if tracked(parent_type):
                kernel.execution_state = state
            elif kernel.execution_state == "starting" and state != "starting":
                kernel.execution_state = "idle"  # as the server normalizes it
        if active:
            self.kernel_manager.last_kernel_activity = kernel.last_activity = utcnow()
