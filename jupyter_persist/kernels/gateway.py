"""A gateway kernel's IOPub, received over the gateway's own kernel websocket.

A kernel on a Kernel or Enterprise Gateway (jupyter_server's ``--gateway-url``) has no
ZMQ sockets this server can reach: its messages exist here only on the websockets the
server opens to the gateway, one per browser. The extension opens one more, of its own,
with the gateway client's URL, headers, token, TLS settings and timeouts, and keeps it
open as long as the kernel runs, reconnecting with backoff when it drops.

On the gateway this connection is a client like any other: it counts as a connection of
the kernel, and when it is the kernel's last one, the gateway buffers what the kernel
publishes for its session and replays it when the same session reconnects.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from jupyter_client.session import Session
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayKernelManager
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
)
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from .iopub import V1_PROTOCOL, decode_frame, encode_request, mentions

#: Seconds between attempts to reach the gateway again: doubling from the first up to
#: the last, with jitter, for as long as the kernel is known to the server.
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
#: Seconds between kernel_info requests until the websocket delivers a message.
NUDGE_INTERVAL = 0.2
#: Seconds between websocket pings: a connection a proxy or load balancer dropped
#: without closing it is noticed within about three of these.
PING_INTERVAL = 20.0
#: The largest message accepted from the gateway (tornado's default, 10 MiB, would
#: close the connection on one big output).
MAX_MESSAGE_BYTES = 1024 * 1024 * 1024

#: Called with each frame received; returns False when the listener's backlog is full.
FrameSink = Callable[["GatewayFeed", "str | bytes"], bool]


def is_gateway_kernel(kernel: Any) -> bool:
    """Whether a kernel manager is jupyter_server's manager of a gateway kernel."""
    return isinstance(kernel, GatewayKernelManager)


def gateway_request(path: str, *, websocket: bool) -> HTTPRequest:
    """A request to the gateway as jupyter_server's own gateway client makes one."""
    client = GatewayClient.instance()
    base = (client.ws_url if websocket else client.url) or ""
    return HTTPRequest(base.rstrip("/") + path, **client.load_connection_args())


class GatewayFeed:
    """The extension's own websocket to one kernel on the gateway.

    Frames go to ``sink`` undecoded (the listener decodes them in its handling slices,
    as it does ZMQ messages); ``on_gone`` is called once when the gateway says the kernel
    no longer exists (404), also on seeing its ``shutdown_reply``.
    """

    def __init__(
        self, kernel_id: str, sink: FrameSink, on_gone: Callable[[str], None], log: Any
    ) -> None:
        self.kernel_id = kernel_id
        self._sink = sink
        self._on_gone = on_gone
        self.log = log
        #: Set by the first frame received on a connection: from then on the gateway
        #: forwards everything the kernel publishes (its own nudge ran before).
        self.live = asyncio.Event()
        #: Never set: a gateway kernel's state on this server comes from the gateway.
        self.idle_since: float | None = None
        self.closed = False
        self.protocol: str | None = None
        #: Our session on the gateway: the same across reconnects, so that the gateway
        #: replays what it buffered while this was the kernel's last connection.
        self.session = Session(
            session=f"jupyter-persist-{uuid.uuid4()}", username="jupyter-persist"
        )
        self._ws: WebSocketClientConnection | None = None
        self._resume = asyncio.Event()
        self._resume.set()
        self._helpers: set[asyncio.Future[None]] = set()
        #: A reconnection asked for (a restart), not a cut: at once and without a WARNING.
        self._reconnect_now = False
        self._task = asyncio.ensure_future(self._run())

    def decode(self, frame: str | bytes) -> dict[str, Any] | None:
        """The IOPub message a frame carries, if the capture needs it (see :func:`decode_frame`)."""
        return decode_frame(frame, self.protocol)[1]

    def note_status(self, msg: dict[str, Any], kernel_manager: Any) -> None:
        """The gateway keeps the kernel's state; nothing to follow here."""

    def pause(self) -> None:
        """Stop reading until :meth:`resume` (the listener's backlog is full)."""
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def renudge(self) -> None:
        """The kernel restarted: reconnect, and wait for it to answer before calling the
        feed live. The gateway's streams of a connection opened before the restart may
        still point at the old process's ports (jupyter_server renews them only for a new
        connection): measured, a feed kept open across a restart heard nothing after it."""
        self.live.clear()
        if self._ws is not None:
            self._reconnect_now = True
            self._ws.close()

    def _start(self, helper: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(helper)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    def close(self) -> None:
        """Close the websocket and stop reconnecting."""
        self.closed = True
        self._resume.set()
        if self._ws is not None:
            self._ws.close()
        self._task.cancel()
        for helper in list(self._helpers):
            helper.cancel()

    async def _run(self) -> None:
        """Connect, read, and reconnect with backoff until closed or the kernel is gone."""
        cut_since: float | None = None
        unreachable_warned = False
        retry = RETRY_FIRST
        while not self.closed:
            try:
                ws = await self._connect()
            except asyncio.CancelledError:
                return
            except HTTPClientError as err:
                if err.code == 404:
                    self._gone("the gateway no longer has it")
                    return
                unreachable_warned = self._unreachable(err, unreachable_warned)
            except Exception as err:
                unreachable_warned = self._unreachable(err, unreachable_warned)
            else:
                if cut_since is not None:
                    self.log.warning(
                        "jupyter_persist: the websocket to kernel %s on the gateway was cut "
                        "for %.1f s; reconnected. What the kernel published meanwhile is "
                        "captured only if the gateway replayed it (it buffers only when no "
                        "other client of the kernel is connected)",
                        self.kernel_id,
                        time.monotonic() - cut_since,
                    )
                elif unreachable_warned:
                    self.log.warning(
                        "jupyter_persist: reached the gateway; capturing kernel %s",
                        self.kernel_id,
                    )
                unreachable_warned = False
                cut_since = None
                retry = RETRY_FIRST
                await self._read(ws)
                if self.closed:
                    return
                if self._reconnect_now:
                    self._reconnect_now = False
                    continue
                cut_since = time.monotonic()
                self.log.debug("jupyter_persist: websocket to kernel %s closed", self.kernel_id)
            delay = min(retry, RETRY_MAX) * random.uniform(0.8, 1.2)  # noqa: S311
            retry *= 2
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                return

    async def _connect(self) -> WebSocketClientConnection:
        path = f"/api/kernels/{self.kernel_id}/channels?session_id={self.session.session}"
        return await websocket_connect(
            gateway_request(path, websocket=True),
            subprotocols=[V1_PROTOCOL],
            ping_interval=PING_INTERVAL,
            max_message_size=MAX_MESSAGE_BYTES,
        )

    def _unreachable(self, err: Exception, warned: bool) -> bool:
        """One WARNING per kernel while the gateway cannot be reached, not one per attempt."""
        if not warned:
            self.log.warning(
                "jupyter_persist: cannot reach kernel %s on the gateway (%s); retrying until "
                "it can (outputs published meanwhile are not captured)",
                self.kernel_id,
                err,
            )
        else:
            self.log.debug(
                "jupyter_persist: gateway still unreachable for %s: %s", self.kernel_id, err
            )
        return True

    async def _read(self, ws: WebSocketClientConnection) -> None:
        self._ws = ws
        self.protocol = ws.selected_subprotocol
        nudging = asyncio.ensure_future(self._nudge(ws))
        try:
            while not self.closed:
                frame = await ws.read_message()
                if frame is None:
                    return
                self.live.set()
                if mentions(frame, "shutdown_reply"):
                    self._check_shutdown(frame)
                if not self._sink(self, frame):
                    await self._resume.wait()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.log.warning(
                "jupyter_persist: reading kernel %s on the gateway: %s", self.kernel_id, err
            )
        finally:
            nudging.cancel()
            self._ws = None
            self.live.clear()
            ws.close()

    async def _nudge(self, ws: WebSocketClientConnection) -> None:
        """Ask the kernel for its info until a frame arrives (on control: a busy kernel answers)."""
        try:
            while not self.live.is_set() and not self.closed:
                for channel in ("control", "shell"):
                    ws.write_message(
                        encode_request(self.session, "kernel_info_request", channel, self.protocol),
                        binary=self.protocol == V1_PROTOCOL,
                    )
                await asyncio.sleep(NUDGE_INTERVAL)
        except asyncio.CancelledError:
            pass
        except Exception as err:
            self.log.debug("jupyter_persist: nudging kernel %s: %s", self.kernel_id, err)

    def _check_shutdown(self, frame: str | bytes) -> None:
        """A ``shutdown_reply`` on IOPub, not for a restart: is the kernel gone?"""
        try:
            if self.protocol == V1_PROTOCOL and isinstance(frame, bytes):
                channel, parts = deserialize_msg_from_ws_v1(frame)
                content = json.loads(parts[3]) if len(parts) > 3 else {}
            else:
                msg = (
                    deserialize_binary_message(frame)
                    if isinstance(frame, bytes)
                    else json.loads(frame)
                )
                channel, content = msg.get("channel"), msg.get("content") or {}
            if channel == "iopub" and not content.get("restart"):
                self._start(self._gone_if_missing())
        except Exception as err:
            self.log.debug(
                "jupyter_persist: reading a shutdown_reply of %s: %s", self.kernel_id, err
            )

    async def _gone_if_missing(self, attempts: int = 10) -> None:
        """Ask the gateway for the kernel until it says 404 (a shutdown takes a moment)."""
        for _ in range(attempts):
            await asyncio.sleep(0.5)
            if self.closed:
                return
            try:
                await AsyncHTTPClient().fetch(
                    gateway_request(f"/api/kernels/{self.kernel_id}", websocket=False)
                )
            except HTTPClientError as err:
                if err.code == 404:
                    self._gone("it was shut down on the gateway")
                    return
            except Exception as err:
                self.log.debug(
                    "jupyter_persist: asking the gateway for %s: %s", self.kernel_id, err
                )
                return

    def _gone(self, why: str) -> None:
        if self.closed:
            return
        self.log.info("jupyter_persist: kernel %s is gone: %s", self.kernel_id, why)
        self.closed = True
        try:
            self._on_gone(self.kernel_id)
        except Exception:
            self.log.exception(
                "jupyter_persist: error following the end of kernel %s", self.kernel_id
            )
