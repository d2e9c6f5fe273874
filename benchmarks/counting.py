"""Kernel managers that count what the server's own IOPub subscriptions read
(``benchmarks/subscriber.py`` only).

A kernel's ZMQ publisher drops, for each subscriber, what does not fit in that
subscriber's queue, so the messages jupyter_server's own subscriptions (each websocket's
IOPub stream, the activity watcher) read of a flood tell how far each kept up, and with
it how many messages the kernel delivered. Each ``ZMQStream`` the kernels' managers
open for IOPub counts the messages it hands its callback; the counts go to the JSON
file named by ``PERSIST_BENCH_COUNTS`` every half second.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado.ioloop import PeriodicCallback

#: Messages read so far: "websocket" (the clients' streams), "watcher" (the server's
#: activity watcher and any other stream opened without an identity).
COUNTS: Counter[str] = Counter()


def _write_counts() -> None:
    path = os.environ.get("PERSIST_BENCH_COUNTS")
    if path:
        Path(path).write_text(json.dumps(COUNTS))


def _counting_connect_iopub(connect: Any) -> Any:
    def connect_iopub(*args: Any, **kwargs: Any) -> Any:
        stream = connect(*args, **kwargs)
        kind = "websocket" if kwargs.get("identity") else "watcher"
        on_recv = stream.on_recv

        def counted_on_recv(callback: Any, copy: bool = True) -> Any:
            if callback is None:
                return on_recv(None)

            def counted(msg: Any) -> Any:
                COUNTS[kind] += 1
                return callback(msg)

            return on_recv(counted, copy=copy)

        stream.on_recv = counted_on_recv
        return stream

    return connect_iopub


class CountingKernelManager(AsyncMappingKernelManager):
    """jupyter_server's default kernel manager, its kernels' IOPub streams counted."""

    _writer: PeriodicCallback | None = None

    def start_watching_activity(self, kernel_id: str) -> None:
        if CountingKernelManager._writer is None:
            CountingKernelManager._writer = PeriodicCallback(_write_counts, 500)
            CountingKernelManager._writer.start()
        kernel = self._kernels[kernel_id]
        if not getattr(kernel, "_counted", False):
            kernel.connect_iopub = _counting_connect_iopub(kernel.connect_iopub)
            kernel._counted = True
        self._watch(kernel_id)

    def _watch(self, kernel_id: str) -> None:
        super().start_watching_activity(kernel_id)


class UnwatchedKernelManager(CountingKernelManager):
    """Without jupyter_server's activity watcher: the server's event loop no longer
    deserializes every IOPub message for ``last_activity`` (what
    ``track_kernel_activity`` takes off it). Kernels' ``last_activity`` stays as at their
    start, and ``execution_state`` is ``idle`` from then on (a websocket's first nudge
    waits while it is ``starting``)."""

    def _watch(self, kernel_id: str) -> None:
        kernel = self._kernels[kernel_id]
        kernel.reason = ""
        kernel.last_activity = utcnow()
        kernel.execution_state = "idle"
        kernel._activity_stream = None
