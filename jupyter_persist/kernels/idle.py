"""Keep the server's view of a kernel's state right when its own watcher drops messages.

jupyter_server learns a kernel's ``execution_state`` from its own IOPub subscription,
which keeps ZMQ's 1,000-message limit: when its event loop falls behind a flood of
output, the kernel drops messages for it, the final ``idle`` among them, and
``GET /api/kernels`` says ``busy`` for good (an idle culler would never cull that
kernel). Reconnecting that socket with a higher limit is no fix: disconnecting a SUB
socket that holds messages can abort the process in libzmq (zeromq/libzmq#2163). Our
own subscription drops nothing, so it can tell.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from .listener import KernelListener
from .lookup import find_kernel

#: Seconds our subscription must have seen a kernel idle before the server's "busy" is
#: taken as a missed status (the server's own watcher reads the same messages sooner).
MISSED_IDLE_AFTER = 2.0


def correct_missed_idle(kernel_manager: Any, listener: KernelListener, log: Any) -> None:
    """Mark idle each kernel the server calls busy although it went idle and stayed so.

    Our subscription must have seen the kernel idle ``MISSED_IDLE_AFTER`` seconds ago
    with no status since, and the server's watcher must have handled nothing of it for
    half that: a new execution's ``busy``, which the watcher may handle before we do,
    makes it recent.
    """
    now = time.monotonic()
    stale = [
        kernel_id
        for kernel_id in listener.kernel_ids
        if now - (listener.idle_since(kernel_id) or now) >= MISSED_IDLE_AFTER
    ]
    if stale:
        listener.catch_up()  # a "busy" waiting in our socket counts first
    for kernel_id in stale:
        since = listener.idle_since(kernel_id)
        if since is None or now - since < MISSED_IDLE_AFTER:
            continue
        kernel = find_kernel(kernel_manager, kernel_id)
        if kernel is None:
            continue
        if getattr(kernel, "execution_state", None) == "busy" and _watcher_quiet(kernel):
            kernel.execution_state = "idle"
            log.warning(
                "jupyter_persist: the server missed kernel %s going idle (its IOPub queue "
                "overflowed during a burst of output); marked it idle",
                kernel_id,
            )


def _watcher_quiet(kernel: Any) -> bool:
    """Whether the server's activity watcher has handled no message of the kernel lately."""
    last = getattr(kernel, "last_activity", None)
    if not isinstance(last, datetime):
        return False
    if last.tzinfo is None:
        last = last.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - last).total_seconds() >= MISSED_IDLE_AFTER / 2
