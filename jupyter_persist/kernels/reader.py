"""Local kernels' IOPub, read and decoded in a thread of our own, off the server's loop.

Receiving a message (seven frames), checking its signature and decoding its JSON cost
about 110 µs each on the server's event loop, as much again as the server's own work per
message: with ten kernels printing, requests waited behind it. Here one thread with its
own ZMQ context and poller does that for every local kernel, merges each run of stream
messages of one execution into one, and hands the event loop batches: at once after a
quiet spell, then at most every ``HANDOFF_INTERVAL`` while messages keep coming (it rests
in between, so that it takes the GIL a few times a second rather than per message).

The thread owns its sockets from creation to close; the event loop only sends commands
(through a queue, waking the thread's poller with a ZMQ pair socket) and takes batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from .iopub import coalesce_streams
from .subscription import Subscription

#: Seconds the thread rests after each pass over the sockets (commands still wake it).
HANDOFF_INTERVAL = 0.05
#: Messages and bytes read from one socket before the others get their turn.
READ_BATCH = 1000
READ_BYTES = 4 * 1024 * 1024
#: Bytes handed to the event loop and not yet handled past which no socket is read: the
#: rest waits in the sockets' queues until the loop catches up.
BACKLOG_BYTES = 16 * 1024 * 1024
#: Rounds of ``READ_BATCH`` read from a subscription being removed, at most.
REMOVE_ROUNDS = 100
#: Seconds the event loop waits for the thread to answer a command it waits for.
COMMAND_TIMEOUT = 5.0


@dataclass
class Batch:
    """What the thread read of one kernel since the last handoff, in order."""

    subscription: Subscription
    #: Decoded messages the capture needs, stream runs merged.
    messages: list[dict[str, Any]]
    #: Messages received (before skipping and merging), and their bytes on the wire.
    received: int
    nbytes: int


@dataclass
class _Command:
    name: str
    subscription: Subscription | None = None
    done: threading.Event = field(default_factory=threading.Event)


class IOPubReader:
    """The thread that reads every local kernel's IOPub subscription.

    ``on_batches`` is called on the event loop when batches wait to be taken; ``on_live``
    with a subscription whose first message arrived (since it was opened, or since
    :meth:`.Subscription.renudge` after a restart).
    Every method is called on the event loop.
    """

    def __init__(
        self,
        on_batches: Callable[[], None],
        on_live: Callable[[Subscription], None],
        log: Any,
    ) -> None:
        self._on_batches = on_batches
        self._on_live = on_live
        self.log = log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._wake: zmq.Socket[bytes] | None = None  # the event loop's end of the pair
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._lock = threading.Lock()
        #: Handed over, not yet taken by the event loop (under ``_lock``).
        self._outbox: deque[Batch] = deque()
        self._handoff_scheduled = False
        #: Bytes handed over and not yet handled (under ``_lock``).
        self._unhandled_bytes = 0
        self._paused = False
        #: The thread's own state.
        self._subscriptions: dict[zmq.Socket[bytes], Subscription] = {}
        self._pending: dict[zmq.Socket[bytes], Batch] = {}
        self._pending_bytes = 0
        #: Exceptions the thread caught and logged (its loop goes on after each).
        self.errors = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (idempotent; needs the running event loop)."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._pending.clear()  # a thread that ended left them, keyed by its closed sockets
        self._pending_bytes = 0
        self._context = zmq.Context()
        endpoint = f"inproc://jupyter-persist-wake-{id(self)}"
        receiving = self._context.socket(zmq.PAIR)
        receiving.bind(endpoint)
        self._wake = self._context.socket(zmq.PAIR)
        self._wake.connect(endpoint)
        self._thread = threading.Thread(
            target=self._run, args=(receiving,), name="jupyter-persist-iopub", daemon=True
        )
        self._thread.start()

    def add(self, subscription: Subscription) -> None:
        """Start reading a subscription (the thread opens its socket)."""
        self._send(_Command("add", subscription))

    def remove(self, subscription: Subscription) -> None:
        """Read what the subscription's socket holds, hand it over, close it; wait for that."""
        self._wait(self._send(_Command("remove", subscription)))

    def sync(self) -> None:
        """Read every socket once and hand everything over now; wait for that."""
        self._wait(self._send(_Command("sync")))

    def take(self) -> list[Batch]:
        """Everything handed over so far (on the event loop)."""
        with self._lock:
            batches = list(self._outbox)
            self._outbox.clear()
            self._handoff_scheduled = False
        return batches

    def handled(self, nbytes: int) -> None:
        """The event loop handled ``nbytes`` of what it took: the thread may read on."""
        with self._lock:
            self._unhandled_bytes -= nbytes
            resume = self._paused and self._unhandled_bytes < BACKLOG_BYTES // 2
            if resume:
                self._paused = False
        if resume:
            self._wake_thread()

    def stop(self) -> None:
        """Close every socket and end the thread (what was read is handed over first)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._wait(self._send(_Command("stop")))
            thread.join(COMMAND_TIMEOUT)
        self._thread = None
        if self._wake is not None:
            self._wake.close(linger=0)
            self._wake = None
        if self._context is not None and (thread is None or not thread.is_alive()):
            self._context.destroy(linger=0)
        self._context = None

    def _send(self, command: _Command) -> _Command:
        self._commands.put(command)
        self._wake_thread()
        return command

    def _wake_thread(self) -> None:
        if self._wake is not None:
            try:
                self._wake.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError as err:  # a full pipe: the thread is awake already
                self.log.debug("jupyter_persist: waking the IOPub reader: %s", err)

    def _wait(self, command: _Command) -> None:
        if not self.running:
            return
        if not command.done.wait(COMMAND_TIMEOUT):
            self.log.warning(
                "jupyter_persist: the IOPub reader did not answer %r within %s s",
                command.name,
                COMMAND_TIMEOUT,
            )

    # The thread.

    def _run(self, wake: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(wake, zmq.POLLIN)
        #: While the backlog is full: sockets stay readable, so only the pair is polled.
        paused = zmq.Poller()
        paused.register(wake, zmq.POLLIN)
        try:
            while True:
                try:
                    if not self._turn(poller, paused, wake):
                        return
                except Exception:
                    self.errors += 1
                    self.log.exception("jupyter_persist: error in the IOPub reader; going on")
                    time.sleep(0.01)  # never a busy loop of errors
        finally:
            for subscription in list(self._subscriptions.values()):
                self._close(poller, subscription)
            wake.close(linger=0)

    def _turn(self, poller: zmq.Poller, paused: zmq.Poller, wake: zmq.Socket[bytes]) -> bool:
        """One round: wait for messages or a command, read, hand over, then rest a while.

        The rest is what keeps the thread cheap: woken at every message, it would take
        the GIL from the event loop a thousand times a second with ten printing kernels
        (measured: 1.6 times the server's CPU); messages wait in the sockets' queues
        meanwhile and are read in one pass.
        """
        polled = paused if self._backlog_full() else poller
        ready = dict(polled.poll(1000))
        started = time.monotonic()
        if not self._take_commands(wake, poller):
            return False
        if not self._backlog_full():
            for socket in ready:
                subscription = self._subscriptions.get(socket)
                if subscription is not None:
                    self._read(subscription, READ_BATCH, READ_BYTES)
        self._hand_over()
        rest = HANDOFF_INTERVAL - (time.monotonic() - started)
        if rest > 0 and paused.poll(int(rest * 1000)):  # commands only, meanwhile
            return self._take_commands(wake, poller)
        return True

    def _take_commands(self, wake: zmq.Socket[bytes], poller: zmq.Poller) -> bool:
        """Empty the wake-up pair and run the commands waiting; False once told to stop."""
        while True:
            try:
                wake.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        return self._run_commands(poller)

    def _run_commands(self, poller: zmq.Poller) -> bool:
        """Run waiting commands; False once told to stop."""
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return True
            try:
                if command.name == "stop":
                    self._hand_over()
                    return False
                self._run_command(poller, command)
            finally:
                command.done.set()

    def _run_command(self, poller: zmq.Poller, command: _Command) -> None:
        subscription = command.subscription
        if command.name == "add" and subscription is not None:
            try:
                socket = subscription.open_socket(self._context_for_thread())
            except zmq.ZMQError as err:
                self.log.warning(
                    "jupyter_persist: cannot subscribe to IOPub of kernel %s (%s): %s",
                    subscription.kernel_id,
                    subscription.url,
                    err,
                )
                return
            self._subscriptions[socket] = subscription
            poller.register(socket, zmq.POLLIN)
        elif command.name == "remove" and subscription is not None:
            if subscription.socket is not None and not subscription.socket.closed:
                for _ in range(REMOVE_ROUNDS):  # a kernel that is going away
                    if not self._read(subscription, READ_BATCH, None):
                        break
            self._hand_over()
            self._close(poller, subscription)
        elif command.name == "sync":
            if not self._backlog_full():
                for subscription in list(self._subscriptions.values()):
                    self._read(subscription, READ_BATCH, READ_BYTES)
            self._hand_over()

    def _context_for_thread(self) -> zmq.Context[zmq.Socket[bytes]]:
        assert self._context is not None
        return self._context

    def _close(self, poller: zmq.Poller, subscription: Subscription) -> None:
        socket = subscription.socket
        if socket is None:
            return
        self._subscriptions.pop(socket, None)
        dropped = self._pending.pop(socket, None)
        if dropped is not None:
            self._pending_bytes -= dropped.nbytes
        if socket in poller:
            poller.unregister(socket)
        socket.close(linger=0)

    @property
    def backlog_bytes(self) -> int:
        """Bytes read and not yet handled by the event loop (read or handed over)."""
        return self._unhandled_bytes + self._pending_bytes

    def _backlog_full(self) -> bool:
        with self._lock:
            if self._unhandled_bytes + self._pending_bytes >= BACKLOG_BYTES:
                self._paused = True
            return self._paused

    def _read(self, subscription: Subscription, count: int, max_bytes: int | None) -> int:
        """Receive and decode up to ``count`` messages (or ``max_bytes``); return how many."""
        socket = subscription.socket
        assert socket is not None
        batch = self._pending.get(socket)
        if batch is None:
            batch = self._pending[socket] = Batch(subscription, [], 0, 0)
        received = read_bytes = 0
        while received < count and (max_bytes is None or read_bytes < max_bytes):
            try:
                parts = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            received += 1
            read_bytes += sum(len(part) for part in parts)
            try:
                msg = subscription.decode(parts)
            except Exception as err:
                self.log.debug(
                    "jupyter_persist: undecodable IOPub message from %s: %s",
                    subscription.kernel_id,
                    err,
                )
                continue
            if msg is not None:
                batch.messages.append(msg)
        batch.received += received
        batch.nbytes += read_bytes
        self._pending_bytes += read_bytes
        if received and subscription.signal_live:
            subscription.signal_live = False
            self._call_on_loop(self._on_live, subscription)
        return received

    def _hand_over(self) -> None:
        """Put what was read in the outbox and have the event loop take it."""
        batches = [b for b in self._pending.values() if b.received]
        self._pending.clear()
        if not batches:
            return
        for batch in batches:
            batch.messages = list(coalesce_streams(batch.messages))
        with self._lock:
            self._outbox.extend(batches)
            self._unhandled_bytes += self._pending_bytes
            self._pending_bytes = 0
            schedule = not self._handoff_scheduled
            self._handoff_scheduled = True
        if schedule:
            self._call_on_loop(self._on_batches)

    def _call_on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the event loop closed: the server is gone
            self._loop.call_soon_threadsafe(callback, *args)
