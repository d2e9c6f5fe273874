"""One server-side IOPub subscription per kernel, independent of any browser."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from itertools import groupby
from typing import Any

import zmq
from jupyter_client.connect import ConnectionFileMixin
from tornado.ioloop import PeriodicCallback
from traitlets import Any as AnyTrait
from traitlets import Bool, Enum, Integer
from traitlets.config import LoggingConfigurable

from ..meter import LoopMeter
from .activity import ActivityKeeper
from .gateway import GatewayFeed, is_gateway_kernel
from .iopub import coalesce_streams
from .lookup import find_kernel
from .reader import BACKLOG_BYTES, IOPubReader
from .subscription import Subscription, nudge_until_live, subscription_for

#: A kernel's messages: a ZMQ subscription, or a websocket to a gateway kernel.
Source = Subscription | GatewayFeed

MessageCallback = Callable[[str, dict[str, Any]], None]

#: Seconds a gateway's frames wait before they are handled, so that a run of them is
#: handled as one batch (the IOPub reader paces local kernels' messages itself).
HANDLE_DELAY = 0.02
#: Seconds of handling messages per event-loop turn, and the pause after a full one.
#: jupyter_server's own IOPub subscriptions (activity watcher, clients, replay buffer)
#: keep ZMQ's 1,000-message limit: they must be read first, or a flood overflows them.
HANDLE_BUDGET = 0.005
HANDLE_PAUSE = 0.005
#: Seconds between checks that the IOPub reader runs (see ``KernelListener.poll``).
POLL_INTERVAL = 1.0
#: Messages passed on at a time within a handling slice.
HANDLE_BATCH = 64
#: Bytes (on the wire) decoded and passed on at a time within a handling slice: the
#: budget is checked between such steps, so a step must stay short even when each
#: message is large (a kernel printing 1 MB chunks: 16 MB taken and handled in one
#: step held the loop for 250 ms).
HANDLE_BYTES = 256 * 1024


class KernelListener(LoggingConfigurable):
    """Subscribes to the IOPub channel of each kernel of the server's kernel manager.

    The subscription is made with the kernel manager's own connection info, exactly as
    jupyter_server's activity watcher does, so it works for every kernel the manager
    starts, whatever client started it. A process of our own (:mod:`.reader`) reads and
    decodes local kernels' messages; a gateway kernel's arrive on a websocket
    (:mod:`.gateway`). Messages are passed to ``on_message`` on the event loop as
    dictionaries, each run of stream messages of one execution merged into one (see
    :func:`~jupyter_persist.kernels.iopub.coalesce_streams`).
    """

    kernel_manager = AnyTrait(help="The server's MultiKernelManager.")
    iopub_reader = Enum(
        ["process", "thread"], "process", help="Where IOPub is read (see PersistExtension)."
    )
    reader_nice = Integer(0, help="The reader's lower CPU priority (see PersistExtension).")
    trim_memory = Bool(True, help="The reader trims its heap too (see PersistExtension).")
    track_kernel_activity = Bool(
        False, help="Keep kernels' activity for the server (see PersistExtension)."
    )

    def __init__(
        self,
        on_message: MessageCallback,
        on_gone: Callable[[str], None] = lambda kernel_id: None,
        meter: LoopMeter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._on_message = on_message
        #: Called when a gateway says one of its kernels no longer exists.
        self._on_gone = on_gone
        self.meter = meter or LoopMeter()
        self._subscriptions: dict[str, Source] = {}
        self._reader = IOPubReader(
            self._batches_waiting,
            self._live,
            self.log,
            self.iopub_reader,
            self.meter,
            nice=self.reader_nice,
            trim_memory=self.trim_memory,
            on_activity=self._activity_read if self.track_kernel_activity else None,
        )
        #: Taken, not yet handled: (source, decoded messages, bytes on the wire).
        self._received: deque[tuple[Source, list[dict[str, Any]], int]] = deque()
        #: Bytes of gateway frames taken and not yet handled.
        self._gateway_bytes = 0
        #: Gateway feeds not read until the backlog shrinks.
        self._paused: set[GatewayFeed] = set()
        self._handling: asyncio.Handle | asyncio.TimerHandle | None = None
        self._poller: PeriodicCallback | None = None
        #: Kernels with no local ZMQ connection, warned about once.
        self._not_capturable: set[str] = set()
        #: Gateway kernels the gateway said are gone (the server may list them a while).
        self._gone: deque[str] = deque(maxlen=1000)
        self._stopped = False
        #: The nudges' shell sockets (made when first needed; destroyed at close).
        self._nudge_context: zmq.Context[zmq.Socket[bytes]] | None = None
        #: Kernels' last_activity and execution_state, while our subscription is live.
        self.activity = ActivityKeeper(self.kernel_manager, self.log, self.track_kernel_activity)

    @property
    def kernel_ids(self) -> set[str]:
        """Ids of the kernels currently subscribed to."""
        return set(self._subscriptions)

    def attach(self, kernel_id: str) -> bool:
        """Subscribe to a kernel's IOPub (again if its ports changed). Returns success."""
        kernel = find_kernel(self.kernel_manager, kernel_id)
        if kernel is None:
            return False
        ports = tuple(getattr(kernel, "ports", ()) or ())
        current = self._subscriptions.get(kernel_id)
        if isinstance(current, GatewayFeed) and not current.closed:
            return True
        if isinstance(current, Subscription):
            if current.ports == ports:
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
            subscription = subscription_for(kernel_id, kernel, ports)
        except Exception as err:  # a kernel still starting has no connection info yet
            self.log.debug("jupyter_persist: cannot subscribe to kernel %s yet: %s", kernel_id, err)
            return False
        self._start()
        self._subscriptions[kernel_id] = subscription
        self._reader.add(subscription)
        self.log.debug("jupyter_persist: subscribed to IOPub of kernel %s", kernel_id)
        return True

    def _start(self) -> None:
        self._stopped = False
        self._start_reader()
        if self._poller is None:
            self._poller = PeriodicCallback(self.poll, POLL_INTERVAL * 1000)
            self._poller.start()

    def _start_reader(self) -> None:
        if not self._reader.running:
            # A reader that ended missed messages; the new one reads from its start.
            self.activity.hand_back_all()
        self._reader.start()

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
        self.meter.messages += 1
        msg = self._decode(feed, frame)
        self._received.append((feed, [msg] if msg is not None else [], size))
        self._gateway_bytes += size
        if self._handling is None:
            self._handling = asyncio.get_running_loop().call_later(HANDLE_DELAY, self._handle_some)
        if self._gateway_bytes < BACKLOG_BYTES:
            return True
        feed.pause()
        self._paused.add(feed)
        return False

    def _batches_waiting(self) -> None:
        """The reader handed batches over: take and handle them soon, a slice at a time."""
        if self._handling is None:
            self._handling = asyncio.get_running_loop().call_soon(self._handle_some)

    def _take_batches(self, max_bytes: int | None = None) -> None:
        """Decode batches the reader handed over (about ``max_bytes`` of them, or all)."""
        for batch in self._reader.take(max_bytes):
            self.meter.messages += batch.received
            self._received.append((batch.subscription, batch.messages, batch.nbytes))

    def _live(self, subscription: Subscription) -> None:
        subscription.live.set()
        if self._subscriptions.get(subscription.kernel_id) is subscription:
            self.activity.take_over(subscription.kernel_id)

    def _activity_read(self, subscription: Subscription, records: list[Any]) -> None:
        """What a kernel's activity lane read: the kernel's activity, if we keep it."""
        if self._subscriptions.get(subscription.kernel_id) is not subscription:
            return
        self.activity.record(subscription.kernel_id, records)

    def reader_state(self) -> dict[str, Any]:
        """Where local kernels' IOPub is read, for the status."""
        reader = self._reader
        return {
            "mode": reader.mode,
            "pid": reader.pid,
            "running": reader.running,
            "errors": reader.errors,
        }

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
        if subscription is not None:
            subscription.renudge()
        self.activity.hand_back(kernel_id)  # ours may miss the new process's first messages

    async def wait_live(self, kernel_id: str, timeout: float) -> bool:
        """Wait until the kernel's subscription receives messages; False on timeout."""
        subscription = self._subscriptions.get(kernel_id)
        if subscription is None:
            return False
        if isinstance(subscription, GatewayFeed):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(subscription.live.wait(), timeout)
            return subscription.live.is_set()
        if self._nudge_context is None:
            self._nudge_context = zmq.Context()
        return await nudge_until_live(self._nudge_context, subscription, timeout)

    def _handle_some(self) -> None:
        """Handle received messages for up to ``HANDLE_BUDGET`` seconds, then yield."""
        self._handling = None
        with self.meter.timing("iopub"):
            deadline = time.perf_counter() + HANDLE_BUDGET
            try:
                while time.perf_counter() < deadline:
                    if not self._received:
                        self._take_batches(HANDLE_BYTES)
                        if not self._received:
                            break
                    self._handle_batch(HANDLE_BATCH)
            except Exception:
                # Never leave the backlog unhandled and the feeds paused: log, go on.
                self.log.exception("jupyter_persist: error handling IOPub messages")
            finally:
                self._resume_feeds()
                if self._received or self._reader.waiting:
                    loop = asyncio.get_running_loop()
                    self._handling = loop.call_later(HANDLE_PAUSE, self._handle_some)

    def _resume_feeds(self) -> None:
        """Read the gateway feeds left unread again once the backlog is down to half."""
        if not self._paused or self._gateway_bytes >= BACKLOG_BYTES // 2:
            return
        for feed in self._paused:
            feed.resume()
        self._paused.clear()

    def poll(self) -> None:
        """See that the reader runs and that what it sent gets handled.

        A reader that ended (killed, or out of memory) is started again, with every
        subscription (see :meth:`.IOPubReader.start`).
        """
        try:
            subscribed = any(isinstance(s, Subscription) for s in self._subscriptions.values())
            if subscribed and not self._stopped:
                self._start_reader()
            if self._reader.waiting:
                self._batches_waiting()
        except Exception:
            self.log.exception("jupyter_persist: error polling IOPub subscriptions")

    def catch_up(self) -> None:
        """Take what every socket holds (within the bounds) and handle it, now."""
        if any(isinstance(s, Subscription) for s in self._subscriptions.values()):
            self._reader.sync()
        self.handle_all()

    def handle_all(self) -> None:
        """Handle every message received so far, now (before a detach or a stop)."""
        with self.meter.timing("iopub"):
            self._take_batches()
            while self._received:
                self._handle_batch(len(self._received))
            self._resume_feeds()

    def _handle_batch(self, size: int) -> None:
        """Pass on the messages of up to ``size`` received items, merging stream runs.

        Fewer once the items taken reach ``HANDLE_BYTES`` (at least one is).
        """
        taken: list[tuple[Source, list[dict[str, Any]]]] = []
        taken_bytes = 0
        while self._received and len(taken) < size and taken_bytes < HANDLE_BYTES:
            source, messages, nbytes = self._received.popleft()
            taken_bytes += nbytes
            if isinstance(source, GatewayFeed):
                self._gateway_bytes -= nbytes
            else:
                self._reader.handled(nbytes)
            taken.append((source, messages))
            self.activity.record_captured(source.kernel_id, messages)
            for msg in messages:
                if msg["header"].get("msg_type") == "status":
                    source.note_status(msg, self.kernel_manager)
        for source, run in groupby(taken, key=lambda item: item[0]):
            messages = [msg for _, batch in run for msg in batch]
            kernel_id = source.kernel_id
            for msg in coalesce_streams(messages) if len(messages) > 1 else messages:
                self._deliver(kernel_id, msg)

    def detach(self, kernel_id: str) -> None:
        """Close the subscription of a kernel, if any, after handling all it holds."""
        subscription = self._subscriptions.get(kernel_id)
        if isinstance(subscription, Subscription):
            self._reader.remove(subscription)
        self.handle_all()
        subscription = self._subscriptions.pop(kernel_id, None)
        self.activity.hand_back(kernel_id)
        if isinstance(subscription, GatewayFeed):
            self._paused.discard(subscription)
            subscription.close()
            self.log.debug("jupyter_persist: closed the websocket to kernel %s", kernel_id)
        elif subscription is not None:
            subscription.closed = True
            self.log.debug("jupyter_persist: unsubscribed from kernel %s", kernel_id)

    def close(self) -> None:
        """Close every subscription (handling what they received first)."""
        self._stopped = True
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        for kernel_id in list(self._subscriptions):
            self.detach(kernel_id)
        self._reader.stop()
        if self._nudge_context is not None:
            self._nudge_context.destroy(linger=0)  # closes the sockets of nudges still waiting
            self._nudge_context = None
        self.handle_all()
        if self._handling is not None:
            self._handling.cancel()
            self._handling = None

    def _decode(self, feed: GatewayFeed, frame: str | bytes) -> dict[str, Any] | None:
        try:
            return feed.decode(frame)
        except Exception as err:
            self.log.debug(
                "jupyter_persist: undecodable IOPub message from %s: %s", feed.kernel_id, err
            )
            return None

    def _deliver(self, kernel_id: str, msg: dict[str, Any]) -> None:
        try:
            self._on_message(kernel_id, msg)
        except Exception:
            # A callback must never break the subscription: log and keep listening.
            self.log.exception("jupyter_persist: error handling a message of kernel %s", kernel_id)
