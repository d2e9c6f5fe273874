"""The IOPub reader (a process of ours, or a thread), against a real ZMQ publisher signing
as a kernel does."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
from browser import jupyter_server_process, start_session, wait_until
from helpers import thread_nice_values, wait_for
from jupyter_client.session import Session

from jupyter_persist.kernels import reader as reader_module
from jupyter_persist.kernels import readloop
from jupyter_persist.kernels.reader import Batch, IOPubReader
from jupyter_persist.kernels.subscription import Subscription

log = logging.getLogger("test_reader")
MODES = ["process", "thread"]


@dataclass
class FakeKernelIOPub:
    """A PUB socket on 127.0.0.1 that publishes signed IOPub messages, as ipykernel."""

    session: Session
    socket: zmq.Socket[bytes]
    url: str
    port: int
    parent: dict[str, Any] = field(default_factory=dict)

    def publish(self, msg_type: str, content: dict[str, Any], buffers: Any = None) -> None:
        self.session.send(self.socket, msg_type, content, parent=self.parent, buffers=buffers)

    def subscription(self, kernel_id: str = "k") -> Subscription:
        receiving = Session(key=self.session.key)
        return Subscription(kernel_id, receiving, (), self.url)


@contextmanager
def publishing() -> Iterator[FakeKernelIOPub]:
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    session = Session(key=b"secret")
    yield FakeKernelIOPub(
        session, socket, f"tcp://127.0.0.1:{port}", port, session.msg_header("execute_request")
    )
    socket.close(linger=0)
    context.term()


@pytest.fixture
def publisher() -> Any:
    with publishing() as iopub:
        yield iopub


class Received:
    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.live: list[Subscription] = []
        self.reader: IOPubReader | None = None

    def take(self) -> None:
        assert self.reader is not None
        assert threading.current_thread() is threading.main_thread()  # on the event loop
        for batch in self.reader.take():
            self.batches.append(batch)
            self.reader.handled(batch.nbytes)

    def texts(self) -> str:
        return "".join(
            m["content"].get("text", "")
            for b in self.batches
            for m in b.messages
            if m["header"]["msg_type"] == "stream"
        )


@asynccontextmanager
async def running_reader(
    mode: str = "process", nice: int = 0, trim_memory: bool = True
) -> AsyncIterator[tuple[IOPubReader, Received]]:
    """A reader started on the test's event loop (it needs one), stopped after."""
    received = Received()
    reader = IOPubReader(
        received.take, received.live.append, log, mode, nice=nice, trim_memory=trim_memory
    )
    received.reader = reader
    reader.start()
    try:
        yield reader, received
    finally:
        reader.stop()


async def until_live(publisher: FakeKernelIOPub, received: Received) -> None:
    """A SUB socket connects asynchronously: publish until it hears something."""
    for _ in range(100):
        publisher.publish("status", {"execution_state": "idle"})
        await asyncio.sleep(0.05)
        if received.live:
            return
    raise AssertionError("the subscription never received anything")


async def subscribed(
    iopub: IOPubReader, publisher: FakeKernelIOPub, received: Received
) -> Subscription:
    """A subscription to the publisher, added to the reader and receiving."""
    subscription = publisher.subscription()
    iopub.add(subscription)
    await until_live(publisher, received)
    return subscription


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "jupyter-persist-iopub"]


def connected_to(pid: int | None, port: int) -> bool:
    """Whether the reader process has a TCP connection to the publisher's port."""
    assert pid is not None
    return any(c.raddr and c.raddr.port == port for c in psutil.Process(pid).net_connections("tcp"))


@pytest.mark.parametrize("mode", MODES)
async def test_reads_decodes_and_merges_off_the_event_loop(
    publisher: FakeKernelIOPub, mode: str
) -> None:
    async with running_reader(mode) as (iopub, received):
        subscription = await subscribed(iopub, publisher, received)
        assert received.live == [subscription]
        for i in range(500):
            publisher.publish("stream", {"name": "stdout", "text": f"{i}\n"})
        publisher.publish("debug_event", {"event": "stopped"})  # not needed: skipped
        publisher.publish("comm_msg", {"comm_id": "c", "data": {}}, buffers=[b"\x00\xff", b"2"])
        await wait_for(lambda: "499\n" in received.texts(), timeout=10)
        assert received.texts() == "".join(f"{i}\n" for i in range(500))
        await wait_for(lambda: sum(b.received for b in received.batches) >= 502, timeout=10)
        messages = [m for b in received.batches for m in b.messages]
        streams = [m for m in messages if m["header"]["msg_type"] == "stream"]
        assert len(streams) < 500 / 10  # runs merged into a few messages
        assert [m["buffers"] for m in messages if m["header"]["msg_type"] == "comm_msg"] == [
            [b"\x00\xff", b"2"]
        ]
        assert all(b.subscription is subscription for b in received.batches)
        if mode == "process":
            assert iopub.pid is not None
            assert psutil.pid_exists(iopub.pid)
            assert reader_threads() == []
        else:
            assert iopub.pid is None
            assert len(reader_threads()) == 1


async def test_sync_hands_over_what_is_waiting_at_once(
    publisher: FakeKernelIOPub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a thread, where the reader's rest can be made an hour long."""
    async with running_reader("thread") as (iopub, received):
        await subscribed(iopub, publisher, received)
        monkeypatch.setattr(readloop, "HANDOFF_INTERVAL", 3600)  # a pass, then an hour's rest
        await asyncio.sleep(0.1)
        publisher.publish("stream", {"name": "stdout", "text": "probe\n"})
        await wait_for(lambda: "probe" in received.texts(), timeout=10)  # now it rests
        received.batches.clear()
        publisher.publish("stream", {"name": "stdout", "text": "waiting\n"})
        await asyncio.sleep(0.2)  # in the reader's socket
        assert received.texts() == ""
        iopub.sync()
        received.take()
        assert received.texts() == "waiting\n"


async def test_large_messages_are_handed_over_in_batches_of_bounded_size(
    publisher: FakeKernelIOPub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read in one pass (4 MB), handed over in batches of about ``BATCH_BYTES``: the
    server decodes and handles a batch in one step of its event loop. Taken a few at a
    time, the rest waits."""
    async with running_reader("thread") as (iopub, received):
        await subscribed(iopub, publisher, received)
        monkeypatch.setattr(readloop, "HANDOFF_INTERVAL", 3600)
        await asyncio.sleep(0.1)
        publisher.publish("stream", {"name": "stdout", "text": "probe\n"})
        await wait_for(lambda: "probe" in received.texts(), timeout=10)  # now it rests
        received.batches.clear()
        text = "é" + "x" * 299_998 + "\n"  # 300 kB a message
        for _ in range(6):
            publisher.publish("stream", {"name": "stdout", "text": text})
        await asyncio.sleep(0.3)  # in the reader's socket
        iopub.sync()
        first = iopub.take(1)
        assert len(first) == 1
        assert iopub.waiting
        rest = iopub.take()
        assert not iopub.waiting
    batches = first + rest
    assert len(batches) == 3  # 2 messages reach 512 kB
    assert all(b.nbytes < readloop.BATCH_BYTES + 310_000 for b in batches)
    texts = [m["content"]["text"] for b in batches for m in b.messages]
    assert "".join(texts) == text * 6


async def test_small_batches_of_several_kernels_are_handed_over_together(
    publisher: FakeKernelIOPub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many kernels printing a little: one handoff message for all, not one per kernel
    (receiving and decoding each was 40% of the extension's event-loop time)."""
    with publishing() as second:
        async with running_reader("thread") as (iopub, received):
            await subscribed(iopub, publisher, received)
            other = second.subscription("k2")
            iopub.add(other)
            await until_live(second, received)
            monkeypatch.setattr(readloop, "HANDOFF_INTERVAL", 3600)
            await asyncio.sleep(0.1)
            publisher.publish("stream", {"name": "stdout", "text": "probe\n"})
            await wait_for(lambda: "probe" in received.texts(), timeout=10)  # now it rests
            received.batches.clear()
            publisher.publish("stream", {"name": "stdout", "text": "one\n"})
            second.publish("stream", {"name": "stdout", "text": "two\n"})
            await asyncio.sleep(0.3)  # in the reader's sockets
            iopub.sync()
            batches = iopub.take(1)  # one handoff at least, which holds both
            assert not iopub.waiting
            texts = {b.subscription.kernel_id: b.messages[0]["content"]["text"] for b in batches}
            assert texts == {"k": "one\n", "k2": "two\n"}
            for batch in batches:
                iopub.handled(batch.nbytes)
            assert iopub.backlog_bytes == 0
            # Together within BATCH_BYTES: two of 300 kB go apart, each decoded alone.
            text = "x" * 299_999 + "\n"
            publisher.publish("stream", {"name": "stdout", "text": text})
            second.publish("stream", {"name": "stdout", "text": text})
            await asyncio.sleep(0.3)
            iopub.sync()
            assert len(iopub.take(1)) == 1
            assert iopub.waiting
            assert len(iopub.take()) == 1


def test_a_batch_round_trips_its_texts_and_buffers() -> None:
    """Stream text travels as UTF-8 frames (lone surrogates too), buffers as frames."""
    parent = {"msg_id": "p"}
    messages = [
        {
            "header": {"msg_type": "stream"},
            "parent_header": parent,
            "content": {"name": "stdout", "text": "é\ud800 ok\n"},
            "buffers": [],
        },
        {
            "header": {"msg_type": "execute_result"},
            "parent_header": parent,
            "content": {"data": {"text/plain": "1"}, "text": "not a stream's"},
            "buffers": [],
        },
        {
            "header": {"msg_type": "comm_msg"},
            "parent_header": parent,
            "content": {"comm_id": "c", "data": {}},
            "buffers": [b"\x00\xff"],
        },
        {
            "header": {"msg_type": "stream"},
            "parent_header": parent,
            "content": {"name": "stderr", "text": ""},
            "buffers": [],
        },
    ]
    expected = json.loads(json.dumps([{**m, "buffers": []} for m in messages]))
    expected[2]["buffers"] = [b"\x00\xff"]
    other = {
        "header": {"msg_type": "stream"},
        "parent_header": {"msg_id": "other"},
        "content": {"name": "stdout", "text": "of another kernel\n"},
        "buffers": [],
    }
    expected_other = json.loads(json.dumps(other))
    chunks = [
        (b"id", readloop._Chunk(messages, received=5, nbytes=1234)),
        (b"id2", readloop._Chunk([other], received=1, nbytes=99)),
    ]
    frames = readloop.encode_batch(chunks)
    meta = readloop.batch_meta(frames)
    assert meta["batches"] == [["id", 5, 1234, 4], ["id2", 1, 99, 1]]
    assert len(frames) == 3 + 3 + 1  # three texts, one buffer
    assert readloop.decode_batch(frames, meta) == [
        (b"id", expected),
        (b"id2", [expected_other]),
    ]


async def test_sync_with_the_process(publisher: FakeKernelIOPub) -> None:
    async with running_reader() as (iopub, received):
        await subscribed(iopub, publisher, received)
        for i in range(2000):
            publisher.publish("stream", {"name": "stdout", "text": f"{i}\n"})
        await asyncio.sleep(0.3)  # all on the reader's side of the TCP connection
        iopub.sync()  # no await from here: nothing but the sync brings them
        received.take()
        assert received.texts().endswith("1999\n")


@pytest.mark.parametrize("mode", MODES)
async def test_remove_hands_over_everything_then_closes(
    publisher: FakeKernelIOPub, mode: str
) -> None:
    async with running_reader(mode) as (iopub, received):
        subscription = await subscribed(iopub, publisher, received)
        if mode == "process":
            assert connected_to(iopub.pid, publisher.port)
        for i in range(3000):
            publisher.publish("stream", {"name": "stdout", "text": f"{i}\n"})
        await asyncio.sleep(0.2)
        iopub.remove(subscription)
        received.take()
        assert received.texts().endswith("2999\n")
        if mode == "process":
            await wait_for(lambda: not connected_to(iopub.pid, publisher.port), timeout=5)
        publisher.publish("stream", {"name": "stdout", "text": "after\n"})
        await asyncio.sleep(0.3)
        iopub.sync()
        received.take()
        assert "after" not in received.texts()


@pytest.mark.parametrize("mode", MODES)
async def test_an_error_in_the_reader_is_logged_and_reading_goes_on(
    publisher: FakeKernelIOPub, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    async with running_reader(mode) as (iopub, received):
        await subscribed(iopub, publisher, received)
        iopub._send([b"add", b"broken", b"{not json"])  # the reader's command fails
        for i in range(20):
            publisher.publish("stream", {"name": "stdout", "text": f"{i}\n"})
        await wait_for(lambda: "19\n" in received.texts(), timeout=10)
        await wait_for(lambda: iopub.errors == 1, timeout=10)
        assert "error in the IOPub reader; going on" in caplog.text
        assert "JSONDecodeError" in caplog.text  # the reader's traceback reaches the log
        assert received.texts().endswith("".join(f"{i}\n" for i in range(20)))
        assert iopub.running


@pytest.mark.parametrize("mode", MODES)
async def test_stop_ends_the_reader_and_closes_every_socket(
    publisher: FakeKernelIOPub, mode: str
) -> None:
    async with running_reader(mode) as (iopub, received):
        for i in range(3):
            iopub.add(publisher.subscription(f"k{i}"))
        await until_live(publisher, received)
        pid = iopub.pid
        publisher.publish("stream", {"name": "stdout", "text": "last\n"})
        await asyncio.sleep(0.05)
        iopub.stop()
        assert not iopub.running
        assert reader_threads() == []
        if pid is not None:
            assert not psutil.pid_exists(pid)
            assert iopub.exit_code == 0  # a clean exit, not an abort at shutdown
        received.take()  # what was read before the stop was received
    iopub.stop()  # idempotent


async def test_a_reader_that_was_killed_is_started_again_with_its_subscriptions(
    publisher: FakeKernelIOPub, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_reader() as (iopub, received):
        subscription = await subscribed(iopub, publisher, received)
        old = iopub.pid
        assert old is not None
        psutil.Process(old).kill()
        await wait_for(lambda: not iopub.running, timeout=5)
        iopub.start()
        assert iopub.pid != old
        assert "the IOPub reader stopped; starting it again" in caplog.text
        assert not subscription.live.is_set() or subscription.signal_live  # renudged
        received.batches.clear()
        await wait_for(lambda: connected_to(iopub.pid, publisher.port), timeout=10)
        publisher.publish("stream", {"name": "stdout", "text": "again\n"})
        await wait_for(lambda: "again" in received.texts(), timeout=10)


async def test_the_reading_thread_yields_the_cpu_and_zmqs_receiving_thread_does_not(
    publisher: FakeKernelIOPub,
) -> None:
    """The reader's copy of a flood waits where no core is free; the kernels' queues never
    fill, as ZMQ's I/O thread keeps receiving into the sockets' unbounded queues."""
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    async with running_reader(nice=7) as (iopub, received):
        await subscribed(iopub, publisher, received)
        assert iopub.pid is not None
        nice = thread_nice_values(iopub.pid)
        assert nice["main"] == [min(ours + 7, 19)]
        assert nice["ZMQbg/IO/0"] == [ours]
        publisher.publish("stream", {"name": "stdout", "text": "read\n"})
        await wait_for(lambda: "read" in received.texts(), timeout=10)
    async with running_reader() as (iopub, received):
        await subscribed(iopub, publisher, received)
        assert iopub.pid is not None
        assert thread_nice_values(iopub.pid)["main"] == [ours]  # 0: left alone


@pytest.mark.parametrize("trim_memory", [True, False])
async def test_the_process_gives_memory_back_after_a_burst(
    publisher: FakeKernelIOPub, caplog: pytest.LogCaptureFixture, trim_memory: bool
) -> None:
    """At the end of a quiet second (a progress line now and then still is one) after 8
    MB or more were read, unless ``PersistExtension.trim_memory`` is off."""
    caplog.set_level(logging.DEBUG, logger=log.name)
    async with running_reader(trim_memory=trim_memory) as (iopub, received):
        await subscribed(iopub, publisher, received)
        line = "x" * 999 + "\n"
        for _ in range(10):
            publisher.publish("stream", {"name": "stdout", "text": line * 1000})
        await wait_for(lambda: len(received.texts()) == 10_000_000, timeout=20)
        for i in range(15):  # 3 s of a progress line every 0.2 s
            publisher.publish("stream", {"name": "stdout", "text": f"\r{i}/15"})
            await asyncio.sleep(0.2)
        assert received.texts().endswith("\r14/15")
        trims = re.findall(
            r"the IOPub reader gave -?\d+ MB of memory back after reading (\d+) MB", caplog.text
        )
        if not trim_memory:
            assert trims == []
            return
        assert len(trims) == 1
        assert int(trims[0]) >= 8
        await asyncio.sleep(1.5)  # quiet, but less than 8 MB read since
        assert caplog.text.count("the IOPub reader gave") == 1


def test_lowering_the_priority_is_the_calling_threads_only() -> None:
    seen: dict[str, Any] = {}

    def lower() -> None:
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        seen["why_not"] = readloop.lower_thread_priority(3)
        seen["change"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - before

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=lower)
    thread.start()
    thread.join()
    assert seen["why_not"] is None
    assert seen["change"] == min(3, 19 - main_before)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


def test_the_process_ends_when_the_server_goes_away(tmp_path: Any) -> None:
    """A server killed with SIGKILL closes the reader's stdin: the reader ends too."""
    endpoint = f"ipc://{tmp_path / 'reader'}"
    process = subprocess.Popen(
        [sys.executable, "-m", readloop.__name__, endpoint], stdin=subprocess.PIPE
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(1)  # it runs, waiting for a server
        assert process.stdin is not None
        process.stdin.close()
        assert process.wait(10) == 0
    finally:
        process.kill()


def test_ctrl_c_at_the_servers_terminal_leaves_the_reader_running(tmp_path: Path) -> None:
    """Ctrl-C in the terminal of ``jupyter lab`` signals its whole foreground process group.

    The server then asks whether to shut down; answered "n", it goes on, and so must
    the reader: one that died of the SIGINT is started again, and what the kernels
    published until then is lost (IOPub keeps nothing for a late subscriber). A reader
    that ignored SIGINT itself still died of a Ctrl-C while its interpreter started (CI,
    2026-12-07), so it is kept out of the server's process group from its start.
    """
    terminal, server_side = pty.openpty()
    try:
        with jupyter_server_process(tmp_path, app="server", stdin=server_side) as server:
            start_session(server.base_url, server.token, "ctrl-c.ipynb")

            def reader_pid() -> int | None:
                state = server.api("persist/status")["iopub_reader"]
                return state["pid"] if state["running"] else None

            wait_until(lambda: reader_pid() is not None, 30, "the reader to run")
            pid = reader_pid()
            assert pid is not None
            assert os.getpgid(pid) != os.getpgid(server.process.pid)
            os.killpg(server.process.pid, signal.SIGINT)  # what the terminal does at Ctrl-C
            server.wait_for_log("Shut down this Jupyter server")
            os.write(terminal, b"n\n")
            server.wait_for_log("resuming operation")
            time.sleep(1.5)  # the listener's check that restarts a reader that ended
            assert reader_pid() == pid, server.log_tail()
            assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            assert "KeyboardInterrupt" not in server.log()
    finally:
        os.close(terminal)
        os.close(server_side)


def test_the_sub_socket_has_no_queue_limit_from_the_start(publisher: FakeKernelIOPub) -> None:
    """ZMQ's default limit (1,000 messages) dropped 86,000 of 200,000 lines of a flood."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        socket = readloop.open_sub_socket(context, publisher.url, None)
        assert socket.getsockopt(zmq.RCVHWM) == 0
        assert socket.getsockopt(zmq.LINGER) == 0
        socket.close()
    finally:
        context.term()


async def test_a_process_that_ends_at_once_falls_back_to_a_thread(
    publisher: FakeKernelIOPub, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E.g. a server whose Python cannot import the reader in a process of its own."""
    monkeypatch.setattr(reader_module, "READER_COMMAND", [sys.executable, "-c", "exit(3)"])
    async with running_reader() as (iopub, received):
        subscription = publisher.subscription()
        iopub.add(subscription)
        await wait_for(lambda: not iopub.running, timeout=10)
        iopub.start()  # as the listener's periodic check does
        assert "ended before it was ready (exit code 3" in caplog.text
        assert iopub.mode == "thread"
        assert len(reader_threads()) == 1
        await until_live(publisher, received)
        publisher.publish("stream", {"name": "stdout", "text": "read\n"})
        await wait_for(lambda: "read" in received.texts(), timeout=10)


async def test_a_process_that_cannot_be_started_falls_back_to_a_thread(
    publisher: FakeKernelIOPub, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "READER_COMMAND", ["/nonexistent/python"])
    async with running_reader() as (iopub, received):
        assert "cannot start the IOPub reader process" in caplog.text
        assert iopub.mode == "thread"
        assert iopub.running
        await subscribed(iopub, publisher, received)


async def test_sync_does_not_wait_for_a_reader_still_starting(
    publisher: FakeKernelIOPub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader not yet ready has read nothing: the event loop must not wait for it."""
    slow_start = "import time, runpy, sys; time.sleep(2); sys.argv[0] = 'x'; "
    slow_start += f"runpy.run_module('{readloop.__name__}', run_name='__main__')"
    monkeypatch.setattr(reader_module, "READER_COMMAND", [sys.executable, "-c", slow_start])
    async with running_reader() as (iopub, received):
        subscription = publisher.subscription()
        iopub.add(subscription)
        started = time.monotonic()
        iopub.sync()
        iopub.remove(subscription)
        assert time.monotonic() - started < 0.5
        kept = publisher.subscription("kept")
        iopub.add(kept)
        await until_live(publisher, received)
        assert received.live == [kept]  # the removed one was never opened
