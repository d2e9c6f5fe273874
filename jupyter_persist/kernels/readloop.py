"""The IOPub reader's own side: reads every local kernel's IOPub, off the server's process.

Receiving a message (seven frames), checking its signature and decoding its JSON cost
about 21 µs of CPU each. Done by a thread of the server, it held the GIL while the
event loop waited for it: the server's own forwarding of a flood to the browser ran
18% longer. Done here, in a process of its own (``python -m
jupyter_persist.kernels.readloop ENDPOINT``), it runs beside the server on another core.

The server (:mod:`.reader`) binds a ZMQ PAIR socket; this connects to it, says
``ready``, and from then on takes commands and sends back, per kernel, what it read:
decoded messages (only the fields the capture needs, stream runs merged) in batches,
at once after a quiet spell, then at most every ``HANDOFF_INTERVAL`` while messages
keep coming (it rests in between, so that the server takes a few batches a second
rather than a message at a time). The same loop also runs in a thread of the server
where a process cannot be used (``PersistExtension.iopub_reader = "thread"``).

Frames, server to reader: ``add ID JSON`` (a subscription: the IOPub url, the
session's key and signature scheme, CURVE keys), ``remove ID SEQ`` (read what the
socket holds, send it, close), ``sync SEQ`` (read every socket once and send it all),
``handled NBYTES`` (the server handled that much: read on), ``stop SEQ``.
Reader to server: ``ready``, ``batch META MESSAGES TEXTS... BUFFERS...`` (the batches
of one kernel or more: see :func:`encode_batch`), ``activity ID JSON`` (what a
kernel's activity lane read: see :meth:`ReadLoop.read_lane`), ``done SEQ`` (after
everything the command read was sent), ``log LEVEL TEXT``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import zmq
from jupyter_client.session import Session

from ..heap import TrimFunction, malloc_trim, resident_bytes
from .iopub import IOPubDecoder, coalesce_streams, lane_prefix, message_topic

#: Seconds the reader rests after each pass over the sockets (commands still wake it).
HANDOFF_INTERVAL = 0.05
#: Messages and bytes read from one socket before the others get their turn.
READ_BATCH = 1000
READ_BYTES = 4 * 1024 * 1024
#: Wire bytes past which what is read from a socket goes on in a new batch, and which
#: the batches handed over together stay within (a batch that reaches it travels
#: alone): the server decodes a handoff in one step of its event loop (4 MB of 1 MB
#: prints in one batch held it 250 ms).
BATCH_BYTES = 512 * 1024
#: Bytes sent to the server and not yet handled past which no socket is read: the rest
#: waits in the sockets' queues until the server catches up.
BACKLOG_BYTES = 16 * 1024 * 1024
#: Bytes read since the last trim of the reader's heap that make the next quiet second
#: trim it (see :attr:`ReadLoop.trim`).
TRIM_AFTER_BYTES = 8 * 1024 * 1024
#: Bytes read in a second below which that second counts as quiet (a progress bar's
#: updates still leave it quiet).
QUIET_BYTES = 64 * 1024
#: Rounds of ``READ_BATCH`` read from a subscription being removed, at most.
REMOVE_ROUNDS = 100
#: Messages a kernel's activity lane holds before ZMQ drops the newest: the limit of
#: jupyter_server's own activity watcher (ZMQ's default), which the lane stands in for.
LANE_HWM = 1000
#: Messages read from one activity lane per turn, at most.
LANE_READ = 5000


def subscription_spec(
    url: str, session: Session, curve: tuple[bytes, bytes] | None, activity: bool = False
) -> dict[str, Any]:
    """What the reader needs to open and check a kernel's IOPub (JSON; keys as base64).

    ``activity``: also read the kernel's activity lane (see :meth:`ReadLoop.read_lane`).
    """
    return {
        "url": url,
        "activity": activity,
        "key": base64.b64encode(session.key).decode("ascii"),
        "signature_scheme": session.signature_scheme,
        "packer": session.packer,
        "unpacker": session.unpacker,
        "curve": [base64.b64encode(k).decode("ascii") for k in curve] if curve else None,
    }


@dataclass
class _Chunk:
    """One batch being read: decoded messages, messages received, their wire bytes."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    received: int = 0
    nbytes: int = 0


@dataclass
class _Socket:
    """One kernel's IOPub as the reader holds it."""

    sub_id: bytes
    decode: IOPubDecoder
    socket: zmq.Socket[bytes]
    #: Read since the last handoff, in batches of about ``BATCH_BYTES``.
    chunks: list[_Chunk] = field(default_factory=list)
    #: The kernel's activity lane (None: not asked for), and what it read since the
    #: last handoff: (msg_type, parent's msg_type, execution_state) per message.
    lane: zmq.Socket[bytes] | None = None
    activity: list[tuple[Any, Any, Any]] = field(default_factory=list)
    #: The topic prefix the lane is subscribed to (None: every message; see
    #: :meth:`ReadLoop.narrow_lane`).
    lane_topic: bytes | None = None
    #: The IOPub url, for log lines (the reader does not know kernels' ids).
    url: str = ""

    @property
    def nbytes(self) -> int:
        return sum(chunk.nbytes for chunk in self.chunks)

    def chunk(self) -> _Chunk:
        """The batch that the next message read goes to."""
        if not self.chunks or self.chunks[-1].nbytes >= BATCH_BYTES:
            self.chunks.append(_Chunk())
        return self.chunks[-1]


def open_socket(
    context: zmq.Context[zmq.Socket[bytes]],
    socket_type: int,
    url: str,
    curve: tuple[bytes, bytes] | None,
    options: tuple[tuple[int, int | bytes], ...] = (),
) -> zmq.Socket[bytes]:
    """A socket connected as jupyter_client's ``_create_connected_socket`` connects one.

    ``options`` are set before connecting; linger is 0: nothing of ours is worth waiting
    for at close.
    """
    socket: zmq.Socket[bytes] = context.socket(socket_type)
    try:
        socket.linger = 0
        for option, value in options:
            socket.setsockopt(option, value)
        if curve is not None:
            # As jupyter_client does: the connection file's keys.
            socket.curve_secretkey, socket.curve_publickey = curve
            socket.curve_serverkey = curve[1]
        socket.connect(url)
    except BaseException:
        socket.close(linger=0)
        raise
    return socket


def open_sub_socket(
    context: zmq.Context[zmq.Socket[bytes]], url: str, curve: tuple[bytes, bytes] | None
) -> zmq.Socket[bytes]:
    """A SUB socket as jupyter_client makes one, with no queue limit from the start.

    With ZMQ's default high-water mark (1,000 messages), a kernel that publishes
    faster than the server handles messages drops the excess for this subscriber:
    measured, 86,000 of 200,000 lines lost. The limit applies to connections made
    after it is set, and disconnecting a SUB socket that holds messages can abort
    the process in libzmq (zeromq/libzmq#2163), so it is set before connecting.
    """
    return open_socket(context, zmq.SUB, url, curve, ((zmq.RCVHWM, 0), (zmq.SUBSCRIBE, b"")))


def open_lane_socket(
    context: zmq.Context[zmq.Socket[bytes]], url: str, curve: tuple[bytes, bytes] | None
) -> zmq.Socket[bytes]:
    """A SUB socket for a kernel's activity, bounded as jupyter_server's watcher is.

    What it has no room for is dropped, so that it never lags behind a flood the
    capture's own socket (unbounded, read in order) is still working through. It
    starts subscribed to every message, and narrows to the kernel's statuses' topic
    at the first status (:meth:`ReadLoop.narrow_lane`).
    """
    return open_socket(context, zmq.SUB, url, curve, ((zmq.RCVHWM, LANE_HWM), (zmq.SUBSCRIBE, b"")))


def encode_batch(chunks: list[tuple[bytes, _Chunk]]) -> list[bytes]:
    """The frames of one handoff's batches: of one kernel, or of several together.

    Batches go together within ``BATCH_BYTES``: with 20 kernels printing, receiving and
    decoding 20 small batches per handoff, one at a time, was 40% of the extension's
    time on the event loop. Buffers (widget state) travel as frames of their own, and
    so does stream text, as UTF-8: the server decodes that at memory speed, where
    JSON's escaped newlines cost it 10–30 ms per MB.
    """
    buffers: list[bytes] = []
    counts = []
    texts: list[bytes] = []
    text_of: list[int] = []
    messages: list[dict[str, Any]] = []
    for _, chunk in chunks:
        for msg in chunk.messages:
            counts.append(len(msg["buffers"]))
            buffers.extend(msg["buffers"])
            msg["buffers"] = []
            text = msg["content"].get("text") if msg["header"].get("msg_type") == "stream" else None
            if isinstance(text, str):
                texts.append(text.encode("utf-8", "surrogatepass"))
                text_of.append(len(messages))
                msg["content"] = {**msg["content"], "text": ""}
            messages.append(msg)
    meta = {
        "batches": [
            [sub_id.decode(), chunk.received, chunk.nbytes, len(chunk.messages)]
            for sub_id, chunk in chunks
        ],
        "buffers": counts,
        "texts": text_of,
    }
    return [b"batch", json.dumps(meta).encode(), json.dumps(messages).encode(), *texts, *buffers]


def batch_meta(frames: list[bytes]) -> dict[str, Any]:
    """A handoff's batches (subscription id, received, bytes, messages each) and buffer
    counts (see :func:`encode_batch`)."""
    meta: dict[str, Any] = json.loads(frames[1])
    return meta


def decode_batch(
    frames: list[bytes], meta: dict[str, Any]
) -> list[tuple[bytes, list[dict[str, Any]]]]:
    """Each batch's subscription id and messages, given the frames' :func:`batch_meta`."""
    messages: list[dict[str, Any]] = json.loads(frames[2])
    texts = meta["texts"]
    for index, frame in zip(texts, frames[3 : 3 + len(texts)], strict=True):
        messages[index]["content"]["text"] = frame.decode("utf-8", "surrogatepass")
    buffers = iter(frames[3 + len(texts) :])
    for msg, count in zip(messages, meta["buffers"], strict=True):
        msg["buffers"] = [next(buffers) for _ in range(count)]
    batches = []
    start = 0
    for sub_id, _, _, count in meta["batches"]:
        batches.append((sub_id.encode(), messages[start : start + count]))
        start += count
    return batches


class ReadLoop:
    """Reads every subscription it is told of and sends the server batches.

    Runs :meth:`run` in a process of its own (:func:`main`) or in a thread of the server;
    it owns its sockets from creation to close.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.context = context
        self.server: zmq.Socket[bytes] = context.socket(zmq.PAIR)
        self.server.linger = 1000
        self.server.setsockopt(zmq.SNDHWM, 0)
        self.server.connect(endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.server, zmq.POLLIN)
        #: While the backlog is full: the sockets stay readable, so only the server and
        #: the activity lanes are polled; between two turns, the server alone.
        self.lanes_only = zmq.Poller()
        self.lanes_only.register(self.server, zmq.POLLIN)
        self.commands_only = zmq.Poller()
        self.commands_only.register(self.server, zmq.POLLIN)
        self.sockets: dict[zmq.Socket[bytes], _Socket] = {}
        self.lanes: dict[zmq.Socket[bytes], _Socket] = {}
        self.by_id: dict[bytes, _Socket] = {}
        #: Bytes sent and not yet handled by the server, and bytes read and not yet sent.
        self.unhandled_bytes = 0
        self.pending_bytes = 0
        self.paused = False
        #: Gives the heap's free memory back to the system (the process's own heap only:
        #: in a thread of the server, the server's trimmer does it). Messages that waited
        #: in the queues while the reader was behind a flood are freed, but glibc kept
        #: them: 730-920 MB of RSS, for good, after a 1 GB flood of 1 MB prints.
        self.trim: TrimFunction | None = None
        self.read_since_trim = 0
        #: The second being counted for :meth:`trim_if_quiet`: its start, bytes read in it.
        self.second_started = time.monotonic()
        self.read_this_second = 0

    def run(self) -> None:
        """Serve until told to stop; errors are sent to the server's log, and it goes on."""
        try:
            self.server.send(b"ready")
            while True:
                try:
                    if not self.turn():
                        return
                except zmq.ContextTerminated:
                    return
                except Exception:
                    self.log(logging.ERROR, "error in the IOPub reader; going on", exc=True)
                    time.sleep(0.01)  # never a busy loop of errors
        finally:
            for held in list(self.sockets.values()):
                self.close(held)
            self.server.close()

    def turn(self) -> bool:
        """One round: wait for messages or a command, read, send, then rest a while.

        The rest is what keeps the server's side cheap: it takes a few batches a second
        rather than a message at a time (the credits it sends back as it handles them
        do not wake the reader early); messages wait in the sockets' queues meanwhile
        and are read in one pass.
        """
        polled = self.lanes_only if self.backlog_full() else self.poller
        ready = dict(polled.poll(1000))
        self.trim_if_quiet()
        started = time.monotonic()
        if not self.run_commands():
            return False
        for socket in ready:
            lane_of = self.lanes.get(socket)
            if lane_of is not None:
                self.read_lane(lane_of)
        if not self.backlog_full():
            for socket in ready:
                held = self.sockets.get(socket)
                if held is not None:
                    self.read(held, READ_BATCH, READ_BYTES)
        self.hand_over()
        # Commands do not end the rest: those that must answer at once (sync, remove)
        # read and send what they need themselves.
        deadline = started + HANDOFF_INTERVAL
        while (rest := deadline - time.monotonic()) > 0:
            if self.commands_only.poll(max(1, int(rest * 1000))) and not self.run_commands():
                return False
        return True

    def trim_if_quiet(self) -> None:
        """Trim the heap after a burst, at the end of a second in which almost nothing
        was read, nothing waits to be sent, and the sockets are being read (while the
        backlog is full, messages wait in their queues: not quiet, however little is read).
        """
        now = time.monotonic()
        if now - self.second_started < 1.0:
            return
        quiet = self.read_this_second < QUIET_BYTES
        self.second_started, self.read_this_second = now, 0
        if (
            self.trim is None
            or not quiet
            or self.read_since_trim < TRIM_AFTER_BYTES
            or self.pending_bytes
            or self.backlog_full()
        ):
            return
        read, self.read_since_trim = self.read_since_trim, 0
        before = resident_bytes()
        self.trim()
        self.log(
            logging.DEBUG,
            f"the IOPub reader gave {(before - resident_bytes()) / 1e6:.0f} MB of memory "
            f"back after reading {read / 1e6:.0f} MB",
        )

    def run_commands(self) -> bool:
        """Run every command waiting; False once told to stop."""
        while True:
            try:
                frames = self.server.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            if not self.run_command(frames):
                return False

    def run_command(self, frames: list[bytes]) -> bool:
        name = frames[0]
        if name == b"add":
            self.add(frames[1], json.loads(frames[2]))
        elif name == b"remove":
            held = self.by_id.get(frames[1])
            if held is not None:
                for _ in range(REMOVE_ROUNDS):  # a kernel that is going away
                    if not self.read(held, READ_BATCH, None):
                        break
                self.hand_over()
                self.close(held)
            self.server.send_multipart([b"done", frames[2]])
        elif name == b"sync":
            for held in list(self.lanes.values()):
                self.read_lane(held)
            if not self.backlog_full():
                for held in list(self.sockets.values()):
                    self.read(held, READ_BATCH, READ_BYTES)
            self.hand_over()
            self.server.send_multipart([b"done", frames[1]])
        elif name == b"handled":
            self.unhandled_bytes -= int(frames[1])
            if self.paused and self.unhandled_bytes + self.pending_bytes < BACKLOG_BYTES // 2:
                self.paused = False
        elif name == b"stop":
            self.hand_over()
            self.server.send_multipart([b"done", frames[1]])
            return False
        return True

    def add(self, sub_id: bytes, spec: dict[str, Any]) -> None:
        session = Session(
            key=base64.b64decode(spec["key"]),
            signature_scheme=spec["signature_scheme"],
            packer=spec["packer"],
            unpacker=spec["unpacker"],
        )
        curve = spec.get("curve")
        keys = (base64.b64decode(curve[0]), base64.b64decode(curve[1])) if curve else None
        try:
            socket = open_sub_socket(self.context, spec["url"], keys)
        except zmq.ZMQError as err:
            self.log(logging.WARNING, f"cannot subscribe to IOPub at {spec['url']}: {err}")
            return
        held = _Socket(sub_id, IOPubDecoder(session), socket, url=spec["url"])
        self.sockets[socket] = held
        self.by_id[sub_id] = held
        self.poller.register(socket, zmq.POLLIN)
        if spec.get("activity"):
            try:
                held.lane = open_lane_socket(self.context, spec["url"], keys)
            except zmq.ZMQError as err:
                self.log(logging.WARNING, f"no activity lane for IOPub at {spec['url']}: {err}")
                return
            self.lanes[held.lane] = held
            self.poller.register(held.lane, zmq.POLLIN)
            self.lanes_only.register(held.lane, zmq.POLLIN)

    def close(self, held: _Socket) -> None:
        self.sockets.pop(held.socket, None)
        self.by_id.pop(held.sub_id, None)
        self.pending_bytes -= held.nbytes
        if held.socket in self.poller:
            self.poller.unregister(held.socket)
        held.socket.close(linger=0)
        if held.lane is not None:
            self.lanes.pop(held.lane, None)
            for poller in (self.poller, self.lanes_only):
                if held.lane in poller:
                    poller.unregister(held.lane)
            held.lane.close(linger=0)
            held.lane = None

    def backlog_full(self) -> bool:
        if self.unhandled_bytes + self.pending_bytes >= BACKLOG_BYTES:
            self.paused = True
        return self.paused

    def read(self, held: _Socket, count: int, max_bytes: int | None) -> int:
        """Receive and decode up to ``count`` messages (or ``max_bytes``); return how many."""
        socket = held.socket
        received = read_bytes = 0
        while received < count and (max_bytes is None or read_bytes < max_bytes):
            try:
                parts = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            received += 1
            size = sum(len(part) for part in parts)
            read_bytes += size
            chunk = held.chunk()
            chunk.received += 1
            chunk.nbytes += size
            try:
                msg = held.decode(parts)
            except Exception as err:
                self.log(logging.DEBUG, f"undecodable IOPub message: {err}")
                continue
            if msg is not None:
                chunk.messages.append(msg)
            if held.lane_topic is not None and (
                msg is None or msg["header"].get("msg_type") == "status"
            ):
                try:
                    self.check_lane(held, parts)
                except Exception as err:
                    self.log(logging.DEBUG, f"could not check the activity lane's topic: {err}")
        self.pending_bytes += read_bytes
        self.read_since_trim += read_bytes
        self.read_this_second += read_bytes
        return received

    def read_lane(self, held: _Socket) -> None:
        """Read what a kernel's activity lane holds (up to ``LANE_READ`` messages).

        The lane is a second subscription that stands in for jupyter_server's activity
        watcher (see :mod:`.activity`): read every turn, even while the capture's
        backlog is full, and bounded as the watcher's socket is, so that a kernel's
        last status reaches the server at once after a flood rather than after
        everything before it.
        """
        lane = held.lane
        if lane is None:
            return
        for _ in range(LANE_READ):
            try:
                parts = lane.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                record = held.decode.activity(parts)
            except Exception as err:
                self.log(logging.DEBUG, f"undecodable IOPub message (activity): {err}")
                continue
            held.activity.append(record)
            if record[0] == "status" and held.lane_topic is None:
                self.narrow_lane(held, message_topic(parts[0]))

    def narrow_lane(self, held: _Socket, status_topic: bytes) -> None:
        """Subscribe a kernel's activity lane to its statuses' topic only (see
        :func:`.iopub.lane_prefix`), where it was subscribed to everything.

        A kernel's ZMQ publisher sends each subscriber only the messages it subscribed
        to, and sending every message of a flood once more to a subscriber that keeps
        up made the kernel's cell 1.42 times as long, where a subscriber to
        ipykernel's ``kernel.`` topic made it 1.05 times (docs/benchmarks.md). The
        messages the lane no longer receives still move ``last_activity``, from the
        capture's side (:meth:`.ActivityKeeper.record_captured`, :meth:`check_lane`).
        """
        prefix = lane_prefix(status_topic)
        if prefix is None or held.lane is None:
            return
        held.lane.setsockopt(zmq.SUBSCRIBE, prefix)
        held.lane.setsockopt(zmq.UNSUBSCRIBE, b"")
        held.lane_topic = prefix
        self.log(logging.DEBUG, f"the activity lane of IOPub at {held.url} reads topic {prefix!r}")

    def check_lane(self, held: _Socket, parts: list[bytes]) -> None:
        """A status or a message the capture does not keep, read by the capture's socket
        while the lane is narrowed: if the lane's subscription left it out, its record
        goes from here, and a status left out subscribes the lane to everything again
        (to narrow once more at its next status): the kernel changed its topics.
        """
        assert held.lane_topic is not None
        topic = message_topic(parts[0])
        if topic.startswith(held.lane_topic):
            return
        record = held.decode.activity(parts)
        held.activity.append(record)
        if record[0] != "status" or held.lane is None:
            return
        held.lane.setsockopt(zmq.SUBSCRIBE, b"")
        held.lane.setsockopt(zmq.UNSUBSCRIBE, held.lane_topic)
        self.log(
            logging.INFO,
            f"a status on IOPub at {held.url} came under topic {topic!r}, "
            f"not {held.lane_topic!r}: its activity lane reads every message again",
        )
        held.lane_topic = None

    def hand_over(self) -> None:
        """Send the server what was read, in batches of about ``BATCH_BYTES`` per socket,
        stream runs merged in each; small batches of several sockets go together. The
        activity lanes' records go first, each kernel's in a frame of its own."""
        for held in self.sockets.values():
            if held.activity:
                records = json.dumps(held.activity).encode()
                self.server.send_multipart([b"activity", held.sub_id, records])
                held.activity = []
        together: list[tuple[bytes, _Chunk]] = []
        together_bytes = 0
        for held in self.sockets.values():
            for chunk in held.chunks:
                chunk.messages = list(coalesce_streams(chunk.messages))
                if together and together_bytes + chunk.nbytes > BATCH_BYTES:
                    self._send_batches(together, together_bytes)
                    together, together_bytes = [], 0
                together.append((held.sub_id, chunk))
                together_bytes += chunk.nbytes
            held.chunks = []
        if together:
            self._send_batches(together, together_bytes)

    def _send_batches(self, chunks: list[tuple[bytes, _Chunk]], nbytes: int) -> None:
        self.server.send_multipart(encode_batch(chunks), copy=False)
        self.unhandled_bytes += nbytes
        self.pending_bytes -= nbytes

    def log(self, level: int, text: str, exc: bool = False) -> None:
        """A line for the server's log (this process has no logger of the server's)."""
        if exc:
            text = f"{text}\n{traceback.format_exc()}"
        try:
            self.server.send_multipart([b"log", str(level).encode(), text.encode()], zmq.NOBLOCK)
        except zmq.ZMQError:
            print(f"jupyter_persist IOPub reader: {text}", file=sys.stderr)


def _exit_with_the_server(fd: int) -> None:
    """End this process when the server's end of its stdin closes (the server is gone).

    A server killed with SIGKILL cannot stop its reader: without this, the reader
    would outlive it, holding the kernels' IOPub connections. Reads the descriptor
    itself: a daemon thread blocked in ``sys.stdin`` holds its buffer's lock, which
    makes the interpreter abort at a normal exit.
    """
    while os.read(fd, 4096):
        pass
    os._exit(0)


NOT_LINUX = "a thread's own priority is only set on Linux"


def lower_thread_priority(increment: int) -> str | None:
    """Lower the calling thread's CPU priority by ``increment``; why not, if it cannot.

    Only the calling thread's: on Linux a thread's nice value is its own (not POSIX's
    per-process one), so ZMQ's I/O threads, started before, keep theirs.
    """
    if not sys.platform.startswith("linux"):
        return NOT_LINUX
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(current + increment, 19))
    except OSError as err:
        return str(err)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("endpoint", help="the server's ZMQ PAIR socket")
    parser.add_argument(
        "--nice", type=int, default=0, help="lower the reading thread's CPU priority by this"
    )
    parser.add_argument(
        "--no-trim", action="store_true", help="keep freed memory (no malloc_trim after bursts)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    watchdog = threading.Thread(
        target=_exit_with_the_server, args=(sys.stdin.fileno(),), name="server-watch", daemon=True
    )
    watchdog.start()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        # Its first socket starts ZMQ's I/O thread, which receives into the sockets'
        # queues: that one keeps the server's priority, so the kernels' queues never fill.
        loop = ReadLoop(context, args.endpoint)
        loop.trim = None if args.no_trim else malloc_trim()
        if args.nice:
            why_not = lower_thread_priority(args.nice)
            if why_not is not None:
                level = logging.DEBUG if why_not == NOT_LINUX else logging.WARNING
                loop.log(level, f"the reader's priority stays as it is: {why_not}")
        loop.run()
    finally:
        context.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
