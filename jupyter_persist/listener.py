"""One server-side IOPub subscription per kernel, independent of any browser."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from jupyter_client.session import Session
from traitlets import Any as AnyTrait
from traitlets.config import LoggingConfigurable
from zmq.eventloop.zmqstream import ZMQStream

#: IOPub message types whose content the capture needs; the rest are skipped unparsed.
WANTED_MSG_TYPES = frozenset(
    {
        "stream",
        "display_data",
        "update_display_data",
        "execute_result",
        "error",
        "clear_output",
        "execute_input",
        "status",
    }
)

MessageCallback = Callable[[str, dict[str, Any]], None]

#: Seconds of handling messages per event-loop turn, and the pause after a full one.
#: jupyter_server's own IOPub subscriptions (activity watcher, clients, replay buffer)
#: keep ZMQ's 1,000-message limit: they must be read first, or a flood overflows them.
HANDLE_BUDGET = 0.005
HANDLE_PAUSE = 0.005


@dataclass
class _Subscription:
    stream: ZMQStream
    session: Session
    ports: tuple[Any, ...]
    #: Set by the first message received: from then on nothing the kernel publishes is
    #: missed (a SUB socket connects asynchronously and drops what comes before).
    live: asyncio.Event = field(default_factory=asyncio.Event)


class KernelListener(LoggingConfigurable):
    """Subscribes to the IOPub channel of each kernel of the server's kernel manager.

    The subscription is opened with the kernel manager's own connection info, exactly as
    jupyter_server's activity watcher does, so it works for every kernel the manager
    starts, whatever client started it. Messages are passed to ``on_message`` as
    deserialized dictionaries (buffers dropped), one call each.
    """

    kernel_manager = AnyTrait(help="The server's MultiKernelManager.")

    def __init__(self, on_message: MessageCallback, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_message = on_message
        self._subscriptions: dict[str, _Subscription] = {}
        #: Received, not yet handled (our socket's queue has no limit; this is its tail).
        self._received: deque[tuple[str, _Subscription, list[bytes]]] = deque()
        self._handling: asyncio.Handle | asyncio.TimerHandle | None = None

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
        self._lift_watcher_limit(kernel_id, kernel)
        current = self._subscriptions.get(kernel_id)
        if current is not None:
            if current.ports == ports and not current.stream.closed():
                return True
            self.detach(kernel_id)
        try:
            stream = kernel.connect_iopub()
        except Exception as err:  # a kernel still starting has no connection info yet
            self.log.debug("jupyter_persist: cannot subscribe to kernel %s yet: %s", kernel_id, err)
            return False
        self._never_drop(kernel_id, kernel, stream)
        session = Session(config=kernel.session.config, key=kernel.session.key)
        subscription = _Subscription(stream, session, ports)
        self._subscriptions[kernel_id] = subscription
        stream.on_recv(lambda parts: self._enqueue(kernel_id, subscription, parts))
        self.log.debug("jupyter_persist: subscribed to IOPub of kernel %s", kernel_id)
        return True

    def _lift_watcher_limit(self, kernel_id: str, kernel: Any) -> None:
        """Give jupyter_server's activity watcher of a kernel the same unlimited queue.

        The server learns a kernel's ``execution_state`` from its own IOPub subscription,
        which keeps ZMQ's 1,000-message limit: during a flood of output, with the
        extension's work on the same event loop, it fell behind, missed the kernel's
        final ``idle``, and ``GET /api/kernels`` said ``busy`` for good (measured: a
        200,000-line ``print(..., flush=True)`` loop; an idle culler would never cull that
        kernel). Its stream is ``_activity_stream`` (private to jupyter_server, there
        since 2015); a server without one is left alone.
        """
        stream: Any = getattr(kernel, "_activity_stream", None)
        socket = getattr(stream, "socket", None)
        try:
            if stream is None or socket is None or stream.closed():
                return
            if socket.getsockopt(zmq.RCVHWM) == 0:
                return
        except zmq.ZMQError:
            return
        self._never_drop(kernel_id, kernel, stream, "the server's activity watcher")

    def _never_drop(
        self, kernel_id: str, kernel: Any, stream: Any, whose: str = "the extension's"
    ) -> None:
        """Lift our IOPub socket's receive limit, so a burst waits instead of being lost.

        With ZMQ's default high-water mark (1000 messages), a kernel that publishes
        faster than the server handles messages drops the excess for this subscriber:
        measured, 86,000 of 200,000 lines lost. A socket's limit applies to connections
        made after it is set, so the socket jupyter_client connected is reconnected.
        """
        try:
            url = kernel._make_url("iopub")
            socket = stream.socket
            socket.disconnect(url)
            socket.setsockopt(zmq.RCVHWM, 0)
            socket.connect(url)
        except Exception as err:
            self.log.warning(
                "jupyter_persist: could not lift the IOPub queue limit of %s for kernel %s "
                "(%s); a kernel publishing faster than the server reads may lose messages",
                whose,
                kernel_id,
                err,
            )

    def mark_restarting(self, kernel_id: str) -> None:
        """The kernel process is being replaced: the socket must reconnect to the new one.

        Until it receives from the new process, :meth:`wait_live` nudges again, so
        the websocket gate holds clients back meanwhile.
        """
        subscription = self._subscriptions.get(kernel_id)
        if subscription is not None:
            subscription.live.clear()

    async def wait_live(self, kernel_id: str, timeout: float) -> bool:
        """Wait until the kernel's subscription receives messages; False on timeout.

        Like jupyter_server's own websocket "nudge": kernel_info requests make the kernel
        publish on IOPub until our socket gets something, so we know it is connected.
        """
        subscription = self._subscriptions.get(kernel_id)
        if subscription is None:
            return False
        if subscription.live.is_set():
            return True
        try:
            shell = self.kernel_manager.get_kernel(kernel_id).connect_shell()
        except Exception as err:
            self.log.debug("jupyter_persist: cannot nudge kernel %s: %s", kernel_id, err)
            return False
        deadline = time.monotonic() + timeout
        try:
            while not subscription.live.is_set() and time.monotonic() < deadline:
                subscription.session.send(shell, "kernel_info_request")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(subscription.live.wait(), 0.2)
        finally:
            shell.close(linger=0)
        return subscription.live.is_set()

    def _enqueue(self, kernel_id: str, subscription: _Subscription, parts: list[bytes]) -> None:
        subscription.live.set()
        self._received.append((kernel_id, subscription, parts))
        if self._handling is None:
            self._handling = asyncio.get_running_loop().call_soon(self._handle_some)

    def _handle_some(self) -> None:
        """Handle received messages for up to ``HANDLE_BUDGET`` seconds, then yield."""
        self._handling = None
        deadline = time.perf_counter() + HANDLE_BUDGET
        while self._received and time.perf_counter() < deadline:
            self._receive(*self._received.popleft())
        if self._received:
            loop = asyncio.get_running_loop()
            self._handling = loop.call_later(HANDLE_PAUSE, self._handle_some)

    def handle_all(self) -> None:
        """Handle every message received so far, now (before a detach or a stop)."""
        while self._received:
            self._receive(*self._received.popleft())

    def detach(self, kernel_id: str) -> None:
        """Close the subscription of a kernel, if any."""
        self.handle_all()
        subscription = self._subscriptions.pop(kernel_id, None)
        if subscription is None:
            return
        if not subscription.stream.closed():
            subscription.stream.on_recv(None)
            subscription.stream.close(linger=0)
        self.log.debug("jupyter_persist: unsubscribed from kernel %s", kernel_id)

    def close(self) -> None:
        """Close every subscription (handling what they received first)."""
        for kernel_id in list(self._subscriptions):
            self.detach(kernel_id)
        self.handle_all()
        if self._handling is not None:
            self._handling.cancel()
            self._handling = None

    def _receive(self, kernel_id: str, subscription: _Subscription, parts: list[bytes]) -> None:
        try:
            msg = decode(subscription.session, parts)
        except Exception as err:
            self.log.debug("jupyter_persist: undecodable IOPub message from %s: %s", kernel_id, err)
            return
        if msg is None:
            return
        try:
            self._on_message(kernel_id, msg)
        except Exception:
            # A callback must never break the subscription: log and keep listening.
            self.log.exception("jupyter_persist: error handling a message of kernel %s", kernel_id)


def decode(session: Session, parts: list[bytes]) -> dict[str, Any] | None:
    """Check a message's signature and decode what the capture needs; None to skip it.

    Leaner than ``Session.deserialize``, which this runs beside for every IOPub message:
    no date parsing, no replay history (an IOPub SUB socket only receives), and the
    parent header and content are only decoded for the message types we use.
    """
    _, fed = session.feed_identities(parts)  # copies: every part is bytes
    if len(fed) < 5:
        raise ValueError("too few message parts")
    signature: Any = fed[0]
    if session.auth is not None and not hmac.compare_digest(signature, session.sign(fed[1:5])):
        raise ValueError("invalid signature")
    header = session.unpack(fed[1])
    if header.get("msg_type") not in WANTED_MSG_TYPES:
        return None
    return {
        "header": header,
        "parent_header": session.unpack(fed[2]),
        "content": session.unpack(fed[4]),
        "buffers": [],
    }
