"""The server's end of the IOPub reader: a process of ours that reads local kernels' IOPub.

The reader (:mod:`.readloop`) runs in a process of its own, so that receiving, checking
and decoding every message (about 21 µs of CPU each) neither runs on the server's event
loop nor holds its GIL. This side starts it, tells it which kernels to read, and takes
the batches it sends back on the event loop; the listener (:mod:`.listener`) hands
them on. ``mode="thread"`` runs the same loop in a thread of the server instead (where
ZMQ has no IPC transport, e.g. some Windows builds, or by configuration).

The process is connected over a ZMQ IPC socket in a directory only the server's user
can enter (the commands carry the kernels' signing keys), and ends by itself when the
server does (its stdin closes); in a session of its own, Ctrl-C in the server's
terminal does not reach it.
Its reading thread runs at a lower CPU priority (``PersistExtension.reader_nice``):
where no core is free, the server's event loop comes first, and the reader reads what
waits in its sockets' queues after.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from tornado.ioloop import IOLoop

from ..meter import LoopMeter
from . import readloop
from .readloop import BACKLOG_BYTES, ReadLoop, batch_meta, decode_batch, subscription_spec
from .subscription import Subscription

__all__ = ["BACKLOG_BYTES", "Batch", "IOPubReader"]

#: Seconds the event loop waits for the reader to answer a command it waits for, and
#: for a new reader to be ready.
COMMAND_TIMEOUT = 5.0
#: The reader process's command line, before its endpoint.
READER_COMMAND = [
    sys.executable,
    "-c",
    f"import sys; from {readloop.__name__} import main; sys.exit(main())",
]
#: Handled bytes told to the reader at a time (it pauses at ``BACKLOG_BYTES`` unhandled).
CREDIT_BYTES = 256 * 1024


@dataclass
class Batch:
    """What the reader read of one kernel since its last handoff, in order."""

    subscription: Subscription
    #: Decoded messages the capture needs, stream runs merged.
    messages: list[dict[str, Any]]
    #: Messages received (before skipping and merging), and their bytes on the wire.
    received: int
    nbytes: int


@dataclass
class _Handoff:
    """One ``batch`` message of the reader, received and not yet decoded."""

    frames: list[bytes]
    meta: dict[str, Any]
    nbytes: int
    subscriptions: list[Subscription | None]


class IOPubReader:
    """Runs the reader and talks to it; every method is called on the event loop.

    ``on_batches`` is called (soon, on the event loop) when batches wait to be taken;
    ``on_live`` with a subscription whose first message arrived (since it was added,
    or since :meth:`.Subscription.renudge` after a restart).
    """

    def __init__(
        self,
        on_batches: Callable[[], None],
        on_live: Callable[[Subscription], None],
        log: Any,
        mode: str = "process",
        meter: LoopMeter | None = None,
        *,
        nice: int = 0,
        trim_memory: bool = True,
        on_activity: Callable[[Subscription, list[Any]], None] | None = None,
    ) -> None:
        self._on_batches = on_batches
        #: Called on the event loop with what a kernel's activity lane read (the lane is
        #: opened for every subscription when this is given; see ``readloop.read_lane``).
        self._on_activity = on_activity
        #: Receiving batches is counted as the extension's IOPub work on the loop.
        self._meter = meter or LoopMeter()
        self._on_live = on_live
        self.log = log
        self.mode = mode
        #: How much lower the reader process's reading thread's CPU priority is.
        self.nice = nice
        #: Whether the reader process gives its freed memory back after a burst.
        self.trim_memory = trim_memory
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._io_loop: IOLoop | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._folder: Path | None = None
        self._ready = False
        #: Commands waiting for the reader to be ready.
        self._outgoing: list[list[bytes]] = []
        self._ids = itertools.count(1)
        self._subscriptions: dict[bytes, Subscription] = {}
        self._done: set[bytes] = set()
        #: Handoffs received, not yet taken: their frames, meta, wire bytes, and the
        #: subscription of each of their batches (None: removed).
        self._inbox: deque[_Handoff] = deque()
        self._inbox_bytes = 0
        self._taken_bytes = 0
        self._credit = 0
        self._batches_scheduled = False
        self._drain_scheduled = False
        #: Errors the reader caught and logged (it goes on after each).
        self.errors = 0
        #: How the last reader process ended (None: none ended yet).
        self.exit_code: int | None = None

    @property
    def running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self) -> int | None:
        """The reader process's id (None in thread mode or before it started)."""
        return self._process.pid if self._process is not None else None

    @property
    def backlog_bytes(self) -> int:
        """Bytes the reader sent that the event loop has not handled yet."""
        return self._inbox_bytes + self._taken_bytes

    def start(self) -> None:
        """Start the reader (idempotent; needs the running event loop).

        A reader that ended (it never should: it logs its errors and goes on) is logged
        and started again, reading every subscription anew.
        """
        if self.running:
            return
        if self._process is not None and not self._ready:
            self.log.error(
                "jupyter_persist: the IOPub reader process ended before it was ready "
                "(exit code %s; see the lines above); reading IOPub in a thread instead",
                self._process.poll(),
            )
            self.mode = "thread"
        self._close()  # whatever a reader that ended left
        if self._subscriptions:
            self.log.error(
                "jupyter_persist: the IOPub reader stopped; starting it again "
                "(messages published meanwhile may be missed)"
            )
        self._open()
        for sub_id, subscription in self._subscriptions.items():
            subscription.renudge()
            self._send_add(sub_id, subscription)

    def _open(self) -> None:
        self._io_loop = IOLoop.current()
        self._context = zmq.Context()
        socket: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        socket.linger = 0
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
        if self.mode == "process" and not zmq.has("ipc"):
            self.log.warning(
                "jupyter_persist: ZMQ has no IPC transport here; reading IOPub in a thread"
            )
            self.mode = "thread"
        if self.mode == "process":
            self._folder = Path(tempfile.mkdtemp(prefix="jupyter-persist-"))  # mode 0700
            endpoint = f"ipc://{self._folder / 'reader'}"
        else:
            endpoint = f"inproc://jupyter-persist-reader-{id(self)}"
        socket.bind(endpoint)
        self._socket = socket
        self._io_loop.add_handler(socket, self._on_readable, IOLoop.READ)
        if self.mode == "process":
            try:
                options = ["--nice", str(self.nice)] if self.nice else []
                if not self.trim_memory:
                    options.append("--no-trim")
                # A session of its own, as jupyter_client gives kernels: Ctrl-C in the
                # server's terminal signals the terminal's foreground process group, and
                # the server then only asks whether to stop. A reader in that group would
                # die of it (even while its interpreter starts, before any handler could
                # ignore it), and one started again misses what kernels published meanwhile.
                # It ends with the server anyway: its stdin closes.
                self._process = subprocess.Popen(
                    [*READER_COMMAND, endpoint, *options],
                    stdin=subprocess.PIPE,
                    close_fds=True,
                    start_new_session=True,
                )
                return
            except OSError as err:
                self.log.error(
                    "jupyter_persist: cannot start the IOPub reader process (%s); "
                    "reading IOPub in a thread instead",
                    err,
                )
                self.mode = "thread"
                self._close()
                self._open()
                return
        loop = ReadLoop(self._context, endpoint)
        self._thread = threading.Thread(target=loop.run, name="jupyter-persist-iopub", daemon=True)
        self._thread.start()

    def add(self, subscription: Subscription) -> None:
        """Start reading a subscription."""
        sub_id = str(next(self._ids)).encode()
        subscription.reader_id = sub_id
        self._subscriptions[sub_id] = subscription
        self._send_add(sub_id, subscription)

    def _send_add(self, sub_id: bytes, subscription: Subscription) -> None:
        spec = subscription_spec(
            subscription.url,
            subscription.session,
            subscription.curve,
            activity=self._on_activity is not None,
        )
        self._send([b"add", sub_id, json.dumps(spec).encode()])

    def remove(self, subscription: Subscription) -> None:
        """Take what the subscription's socket holds, then close it; wait for that."""
        sub_id = subscription.reader_id
        if sub_id is None or sub_id not in self._subscriptions:
            return
        # Not yet sent to a reader still starting: then it never opens that socket.
        self._outgoing = [f for f in self._outgoing if not (f[0] == b"add" and f[1] == sub_id)]
        self._wait("remove", sub_id)
        self._subscriptions.pop(sub_id, None)

    def sync(self) -> None:
        """Have every socket read once and everything sent here now; wait for that."""
        self._wait("sync")

    @property
    def waiting(self) -> bool:
        """Whether batches were received and not taken yet."""
        return bool(self._inbox)

    def take(self, max_bytes: int | None = None) -> list[Batch]:
        """Batches received so far, decoded: all, or once ``max_bytes`` are, no more.

        At least one is taken; the caller comes back for the rest (no new
        ``on_batches`` call says they wait, unless more arrive).
        """
        self._batches_scheduled = False
        batches = []
        taken = 0
        while self._inbox and (max_bytes is None or taken < max_bytes):
            handoff = self._inbox.popleft()
            taken += handoff.nbytes
            self._inbox_bytes -= handoff.nbytes
            self._taken_bytes += handoff.nbytes
            try:
                decoded = decode_batch(handoff.frames, handoff.meta)
            except Exception:
                # Never from a reader of the same version; the reader may read on.
                self.log.exception(
                    "jupyter_persist: undecodable batches from the IOPub reader (%d bytes)",
                    handoff.nbytes,
                )
                self.handled(handoff.nbytes)
                continue
            for subscription, (_, received, nbytes, _), (_, messages) in zip(
                handoff.subscriptions, handoff.meta["batches"], decoded, strict=True
            ):
                if subscription is None:  # removed before it was read: nothing waits for it
                    self.handled(nbytes)
                    continue
                batches.append(Batch(subscription, messages, received, nbytes))
        return batches

    def handled(self, nbytes: int) -> None:
        """The event loop handled ``nbytes`` of what it took: the reader may read on."""
        self._taken_bytes -= nbytes
        self._credit += nbytes
        if self._credit >= CREDIT_BYTES or self.backlog_bytes == 0:
            credit, self._credit = self._credit, 0
            if credit:
                self._send([b"handled", str(credit).encode()])

    def stop(self) -> None:
        """End the reader and close every socket (what was read is received first)."""
        if self.running and self._ready:
            self._wait("stop")
        self._close()
        self._subscriptions.clear()

    def _close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()  # the reader ends by itself when this closes
            try:
                process.wait(COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.log.warning("jupyter_persist: the IOPub reader did not end; killing it")
                process.kill()
                process.wait()
            self.exit_code = process.returncode
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(COMMAND_TIMEOUT)
        if self._socket is not None:
            if self._io_loop is not None:
                self._io_loop.remove_handler(self._socket)
            self._socket.close(linger=0)
            self._socket = None
        if self._context is not None and (thread is None or not thread.is_alive()):
            self._context.destroy(linger=0)
        self._context = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self._ready = False
        self._outgoing.clear()
        self._done.clear()
        self._inbox.clear()
        self._inbox_bytes = self._taken_bytes = self._credit = 0

    def _send(self, frames: list[bytes]) -> None:
        if not self._ready:
            self._outgoing.append(frames)
            return
        assert self._socket is not None
        try:
            # Never blocking: with no peer (the reader just died) a PAIR socket would
            # block the event loop. Nothing is lost: a restarted reader is told again.
            self._socket.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.log.debug("jupyter_persist: the IOPub reader is gone; %r not sent", frames[0])
        self._schedule_drain()  # sending can eat the socket's readable edge

    def _wait(self, command: str, *args: bytes) -> None:
        """Send a command and receive until the reader says it is done (≤ COMMAND_TIMEOUT).

        Not while the reader is still starting: it has read nothing yet, and waiting for
        a new process to start would hold the event loop (measured: 1.8 s on a busy
        machine, at the first client's connection).
        """
        if self._socket is None or not self.running or not self._ready:
            return
        seq = str(next(self._ids)).encode()
        self._send([command.encode(), *args, seq])
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while seq not in self._done:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.running:
                self.log.warning(
                    "jupyter_persist: the IOPub reader did not answer %r within %s s",
                    command,
                    COMMAND_TIMEOUT,
                )
                return
            if self._socket.poll(int(min(remaining, 0.1) * 1000) + 1):
                self._drain()
        self._done.discard(seq)

    def _on_readable(self, *_: Any) -> None:
        self._drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and self._io_loop is not None:
            self._drain_scheduled = True
            self._io_loop.add_callback(self._drain)

    def _drain(self) -> None:
        """Receive everything the reader sent (cheap: batches are decoded when taken)."""
        self._drain_scheduled = False
        with self._meter.timing("iopub"):
            self._receive_all()

    def _receive_all(self) -> None:
        socket = self._socket
        if socket is None:
            return
        while True:
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                self._receive(frames)
            except Exception:
                self.log.exception("jupyter_persist: unreadable frames from the IOPub reader")

    def _receive(self, frames: list[bytes]) -> None:
        kind = frames[0]
        if kind == b"batch":
            meta = batch_meta(frames)
            batches = meta["batches"]
            subscriptions = [self._subscriptions.get(batch[0].encode()) for batch in batches]
            nbytes = sum(batch[2] for batch in batches)
            self._inbox.append(_Handoff(frames, meta, nbytes, subscriptions))
            self._inbox_bytes += nbytes
            for subscription, (_, received, _, _) in zip(subscriptions, batches, strict=True):
                if subscription is not None and received and subscription.signal_live:
                    subscription.signal_live = False
                    self._on_live(subscription)
            if not self._batches_scheduled and self._io_loop is not None:
                self._batches_scheduled = True
                self._io_loop.add_callback(self._on_batches)
        elif kind == b"activity":
            subscription = self._subscriptions.get(frames[1])
            if subscription is not None and self._on_activity is not None:
                self._on_activity(subscription, json.loads(frames[2]))
        elif kind == b"done":
            self._done.add(frames[1])
        elif kind == b"log":
            level = int(frames[1])
            if level >= 40:  # logging.ERROR
                self.errors += 1
            self.log.log(level, "jupyter_persist: %s", frames[2].decode(errors="replace"))
        elif kind == b"ready":
            self._ready = True
            outgoing, self._outgoing = self._outgoing, []
            for command in outgoing:
                self._send(command)
