"""One server-side IOPub subscription per kernel, independent of any browser."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter
from typing import Any

import zmq
from jupyter_client.connect import ConnectionFileMixin
from tornado.ioloop import PeriodicCallback
from traitlets import Any as AnyTrait
from traitlets.config import LoggingConfigurable

from .gateway import GatewayFeed, is_gateway_kernel
from .iopub import coalesce_streams
from .subscription import Subscription, nudge_until_live, open_subscription

#: A kernel's messages: a ZMQ subscription, or a websocket to a gateway kernel.
Source = Subscription | GatewayFeed

MessageCallback = Callable[[str, dict[str, Any]], None]

#: Seconds messages wait before they are handled: a backlog is handled as one batch, in
#: which consecutive stream messages are merged (far below the journal's 1 s).
HANDLE_DELAY = 0.02
#: Seconds of handling messages per event-loop turn, and the pause after a full one.
#: jupyter_server's own IOPub subscriptions (activity watcher, clients, replay buffer)
#: keep ZMQ's 1,000-message limit: they must be read first, or a flood overflows them.
HANDLE_BUDGET = 0.005
HANDLE_PAUSE = 0.005
#: Messages and bytes read from one socket per event-loop turn.
READ_BATCH = 1000
READ_BYTES = 4 * 1024 * 1024
#: Bytes received and not yet handled past which sockets are left unread for a while.
BACKLOG_BYTES = 16 * 1024 * 1024
#: Seconds between polls of every subscription (see ``KernelListener.poll``).
POLL_INTERVAL = 1.0
#: Messages and bytes decoded and merged at a time within a handling slice.
HANDLE_BATCH = 64
HANDLE_BATCH_BYTES = 1024 * 1024


class KernelListener(LoggingConfigurable):
    """Subscribes to the IOPub channel of each kernel of the server's kernel manager.

    The subscription is opened with the kernel manager's own connection info, exactly as
    jupyter_server's activity watcher does, so it works for every kernel the manager
    starts, whatever client started it. Messages are passed to ``on_message`` as
    deserialized dictionaries (buffers dropped), a run of stream messages of one
    execution merged into one (see :func:`~jupyter_persist.kernels.iopub.coalesce_streams`).

    The socket is read directly, every waiting message at once, rather than through a
    ``ZMQStream``, which costs an event-loop turn and a socket-option query per message:
    measured, a third of the capture's cost during a ``print(..., flush=True)`` flood.
    """

    kernel_manager = AnyTrait(help="The server's MultiKernelManager.")

    def __init__(
        self,
        on_message: MessageCallback,
        on_gone: Callable[[str], None] = lambda kernel_id: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._on_message = on_message
        #: Called when a gateway says one of its kernels no longer exists.
        self._on_gone = on_gone
        self._subscriptions: dict[str, Source] = {}
        #: Received, not yet handled (our socket's queue has no limit; this is its tail):
        #: ZMQ message parts, or a gateway's websocket frames.
        self._received: deque[tuple[str, Source, Any, int]] = deque()
        self._received_bytes = 0
        #: Kernels whose socket is not read until the backlog shrinks.
        self._paused: set[str] = set()
        self._handling: asyncio.Handle | asyncio.TimerHandle | None = None
        self._poller: PeriodicCallback | None = None
        #: Kernels with no local ZMQ connection, warned about once.
        self._not_capturable: set[str] = set()
        #: Gateway kernels the gateway said are gone (the server may list them a while).
        self._gone: deque[str] = deque(maxlen=1000)

    @property
    def kernel_ids(self) -> set[str]:
        """Ids of the kernels currently subscribed to."""
        return set(self._subscriptions)

    def attach(self, kernel_id: str) -> bool:
        """Subscribe to a kernel's IOPub (again if its ports changed). Returns success."""
        try:
            kernel = self.kernel_manager.get_kernel(kernel_id)
            ports = tuple(getattr(kernel, "ports", ()) or ())
        except KeyError:
            return False
        current = self._subscriptions.get(kernel_id)
        if isinstance(current, GatewayFeed) and not current.closed:
            return True
        if isinstance(current, Subscription):
            if current.ports == ports and not current.owner.closed:
                return True
            self.detach(kernel_id)
        if is_gateway_kernel(kernel):
            return self._attach_gateway(kernel_id)
        if not isinstance(kernel, ConnectionFileMixin):
            if kernel_id in self._not_capturable:
                return False
            self._not_capturable.add(kernel_id)
            self.log.warning(
                "jupyter_persist: kernel %s (%s) has no local ZMQ connection; not captured",
                kernel_id,
                type(kernel).__name__,
            )
            return False
        try:
            subscription = open_subscription(kernel, ports)
        except Exception as err:  # a kernel still starting has no connection info yet
            self.log.debug("jupyter_persist: cannot subscribe to kernel %s yet: %s", kernel_id, err)
            return False
        self._subscriptions[kernel_id] = subscription
        if self._poller is None:
            self._poller = PeriodicCallback(self.poll, POLL_INTERVAL * 1000)
            self._poller.start()
        loop = asyncio.get_running_loop()
        loop.add_reader(subscription.fd, self._read, kernel_id, subscription)
        # The descriptor signals changes only: read what may already be waiting.
        loop.call_soon(self._read, kernel_id, subscription)
        self.log.debug("jupyter_persist: subscribed to IOPub of kernel %s", kernel_id)
        return True

    def _attach_gateway(self, kernel_id: str) -> bool:
        if kernel_id in self._gone:
            return False
        self._subscriptions[kernel_id] = GatewayFeed(
            kernel_id, self._receive_frame, self._gateway_kernel_gone, self.log
        )
        self.log.debug(
            "jupyter_persist: opening a websocket to kernel %s on the gateway", kernel_id
        )
        return True

    def _gateway_kernel_gone(self, kernel_id: str) -> None:
        self._gone.append(kernel_id)
        self._on_gone(kernel_id)

    def _receive_frame(self, feed: GatewayFeed, frame: str | bytes) -> bool:
        """Take a gateway frame; False (and the feed paused) while the backlog is full."""
        if self._subscriptions.get(feed.kernel_id) is not feed:
            return True
        size = len(frame)
        self._received.append((feed.kernel_id, feed, frame, size))
        self._received_bytes += size
        if self._handling is None:
            self._handling = asyncio.get_running_loop().call_later(HANDLE_DELAY, self._handle_some)
        if self._received_bytes < BACKLOG_BYTES:
            return True
        feed.pause()
        self._paused.add(feed.kernel_id)
        return False

    def idle_since(self, kernel_id: str) -> float | None:
        """Monotonic time since which the kernel is idle by its IOPub status, or None."""
        subscription = self._subscriptions.get(kernel_id)
        return subscription.idle_since if subscription is not None else None

    def mark_restarting(self, kernel_id: str) -> None:
        """The kernel process is being replaced: the socket must reconnect to the new one.

        Until it receives from the new process, :meth:`wait_live` nudges again, so
        the websocket gate holds clients back meanwhile.
        """
        subscription = self._subscriptions.get(kernel_id)
        if isinstance(subscription, GatewayFeed):
            subscription.renudge()
        elif subscription is not None:
            subscription.live.clear()

    async def wait_live(self, kernel_id: str, timeout: float) -> bool:
        """Wait until the kernel's subscription receives messages; False on timeout."""
        subscription = self._subscriptions.get(kernel_id)
        if subscription is None:
            return False
        if isinstance(subscription, GatewayFeed):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(subscription.live.wait(), timeout)
            return subscription.live.is_set()
        return await nudge_until_live(
            self.kernel_manager, kernel_id, subscription, timeout, self.log
        )

    def _read(self, kernel_id: str, subscription: Subscription, bounded: bool = True) -> int:
        """Take messages waiting on a socket; return how many. Never raises.

        Bounded (the default), a call takes at most ``READ_BATCH`` messages or
        ``READ_BYTES``, and none while ``BACKLOG_BYTES`` wait to be handled: the rest
        stays in the socket's queue until the handler catches up (a flood of 1 MB prints
        read eagerly blocked the event loop for seconds and doubled the server's memory).
        """
        socket = subscription.socket
        if subscription.owner.closed or self._subscriptions.get(kernel_id) is not subscription:
            return 0
        received = read_bytes = 0
        loop = asyncio.get_running_loop()
        try:
            while True:
                if bounded and self._received_bytes >= BACKLOG_BYTES:
                    self._paused.add(kernel_id)
                    break
                if bounded and (received >= READ_BATCH or read_bytes >= READ_BYTES):
                    # More may wait, and the edge-triggered descriptor will not say so again.
                    loop.call_soon(self._read, kernel_id, subscription)
                    break
                try:
                    parts = socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                size = sum(len(part) for part in parts)
                self._received.append((kernel_id, subscription, parts, size))
                self._received_bytes += size
                received += 1
                read_bytes += size
        except zmq.ZMQError as err:
            self.log.debug("jupyter_persist: reading IOPub of kernel %s: %s", kernel_id, err)
        if received:
            subscription.live.set()
            if self._handling is None:
                self._handling = loop.call_later(HANDLE_DELAY, self._handle_some)
        return received

    def _handle_some(self) -> None:
        """Handle received messages for up to ``HANDLE_BUDGET`` seconds, then yield."""
        self._handling = None
        deadline = time.perf_counter() + HANDLE_BUDGET
        try:
            while self._received and time.perf_counter() < deadline:
                self._handle_batch(HANDLE_BATCH, HANDLE_BATCH_BYTES)
        except Exception:
            # Never leave the backlog unhandled and the sockets unread: log, go on.
            self.log.exception("jupyter_persist: error handling IOPub messages")
        finally:
            self._resume_reading()
            if self._received:
                loop = asyncio.get_running_loop()
                self._handling = loop.call_later(HANDLE_PAUSE, self._handle_some)

    def _resume_reading(self) -> None:
        """Read the sockets left unread again once the backlog is down to half."""
        if not self._paused or self._received_bytes >= BACKLOG_BYTES // 2:
            return
        loop = asyncio.get_running_loop()
        for kernel_id in self._paused:
            subscription = self._subscriptions.get(kernel_id)
            if isinstance(subscription, GatewayFeed):
                subscription.resume()
            elif subscription is not None:
                loop.call_soon(self._read, kernel_id, subscription)
        self._paused.clear()

    def poll(self) -> None:
        """Read every socket not paused, and see that what was received gets handled.

        Called periodically as a safety net: the sockets' descriptors signal changes
        only, so a change missed would leave a socket unread until the next message;
        once, during a flood of 1 MB prints, a subscription stopped after 5 MB and the
        kernel dropped the rest for it (cause not found).
        """
        try:
            for kernel_id, subscription in self._zmq_subscriptions():
                if kernel_id not in self._paused and self._read(kernel_id, subscription):
                    self.log.debug("jupyter_persist: polled messages of kernel %s", kernel_id)
            self._resume_reading()
            if self._received and self._handling is None:
                self.log.warning(
                    "jupyter_persist: %d IOPub messages were left unhandled; handling them",
                    len(self._received),
                )
                self._handling = asyncio.get_running_loop().call_soon(self._handle_some)
        except Exception:
            self.log.exception("jupyter_persist: error polling IOPub subscriptions")

    def catch_up(self) -> None:
        """Read every socket (within the bounds) and handle what was received, now."""
        for kernel_id, subscription in self._zmq_subscriptions():
            self._read(kernel_id, subscription)
        self.handle_all()

    def _zmq_subscriptions(self) -> list[tuple[str, Subscription]]:
        """The sockets to read (a gateway's websockets are read by their own tasks)."""
        return [(k, s) for k, s in self._subscriptions.items() if isinstance(s, Subscription)]

    def handle_all(self) -> None:
        """Handle every message received so far, now (before a detach or a stop)."""
        while self._received:
            self._handle_batch(len(self._received), None)
        self._resume_reading()

    def _handle_batch(self, size: int, max_bytes: int | None) -> None:
        """Decode up to ``size`` messages (or ``max_bytes``), merge stream runs, pass them on."""
        decoded: list[tuple[str, dict[str, Any]]] = []
        taken = 0
        while self._received and len(decoded) < size:
            if max_bytes is not None and decoded and taken >= max_bytes:
                break
            kernel_id, subscription, parts, nbytes = self._received.popleft()
            self._received_bytes -= nbytes
            taken += nbytes
            msg = self._decode(kernel_id, subscription, parts)
            if msg is None:
                continue
            decoded.append((kernel_id, msg))
            if msg["header"].get("msg_type") == "status":
                subscription.note_status(msg, self.kernel_manager)
        for kernel_id, run in groupby(decoded, key=itemgetter(0)):
            for msg in coalesce_streams(msg for _, msg in run):
                self._deliver(kernel_id, msg)

    def detach(self, kernel_id: str) -> None:
        """Close the subscription of a kernel, if any, after handling all it holds."""
        subscription = self._subscriptions.get(kernel_id)
        if isinstance(subscription, Subscription):
            while self._read(kernel_id, subscription, bounded=False):
                self.handle_all()
        self.handle_all()
        subscription = self._subscriptions.pop(kernel_id, None)
        self._paused.discard(kernel_id)
        if isinstance(subscription, GatewayFeed):
            subscription.close()
            self.log.debug("jupyter_persist: closed the websocket to kernel %s", kernel_id)
        if not isinstance(subscription, Subscription):
            return
        # Also for a socket closed under us (a destroyed context): its descriptor
        # number may be reused, and a stale registration would shadow the new one.
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(subscription.fd)
        if not subscription.owner.closed:
            subscription.owner.close(linger=0)
        self.log.debug("jupyter_persist: unsubscribed from kernel %s", kernel_id)

    def close(self) -> None:
        """Close every subscription (handling what they received first)."""
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        for kernel_id in list(self._subscriptions):
            self.detach(kernel_id)
        self.handle_all()
        if self._handling is not None:
            self._handling.cancel()
            self._handling = None

    def _decode(self, kernel_id: str, source: Source, payload: Any) -> dict[str, Any] | None:
        try:
            return source.decode(payload)
        except Exception as err:
            self.log.debug("jupyter_persist: undecodable IOPub message from %s: %s", kernel_id, err)
            return None

    def _deliver(self, kernel_id: str, msg: dict[str, Any]) -> None:
        try:
            self._on_message(kernel_id, msg)
        except Exception:
            # A callback must never break the subscription: log and keep listening.
            self.log.exception("jupyter_persist: error handling a message of kernel %s", kernel_id)
