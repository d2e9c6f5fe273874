"""The IOPub reader's thread, against a real ZMQ publisher signing as a kernel does."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import zmq
from helpers import wait_for
from jupyter_client.session import Session

from jupyter_persist.kernels import reader as reader_module
from jupyter_persist.kernels.reader import Batch, IOPubReader
from jupyter_persist.kernels.subscription import Subscription

log = logging.getLogger("test_reader")


@dataclass
class FakeKernelIOPub:
    """A PUB socket on 127.0.0.1 that publishes signed IOPub messages, as ipykernel."""

    session: Session
    socket: zmq.Socket[bytes]
    url: str
    parent: dict[str, Any] = field(default_factory=dict)

    def publish(self, msg_type: str, content: dict[str, Any]) -> None:
        self.session.send(self.socket, msg_type, content, parent=self.parent)

    def subscription(self, kernel_id: str = "k") -> Subscription:
        receiving = Session(key=self.session.key)
        return Subscription(kernel_id, receiving, (), self.url)


@pytest.fixture
def publisher() -> Any:
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    session = Session(key=b"secret")
    yield FakeKernelIOPub(
        session, socket, f"tcp://127.0.0.1:{port}", session.msg_header("execute_request")
    )
    socket.close(linger=0)
    context.term()


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
async def running_reader() -> AsyncIterator[tuple[IOPubReader, Received]]:
    """A reader started on the test's event loop (it needs one), stopped after."""
    received = Received()
    reader = IOPubReader(received.take, received.live.append, log)
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


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "jupyter-persist-iopub"]


async def test_reads_decodes_and_merges_off_the_event_loop(publisher: FakeKernelIOPub) -> None:
    async with running_reader() as (iopub, received):
        subscription = publisher.subscription()
        iopub.add(subscription)
        await until_live(publisher, received)
        assert received.live == [subscription]
        for i in range(500):
            publisher.publish("stream", {"name": "stdout", "text": f"{i}\n"})
        publisher.publish("debug_event", {"event": "stopped"})  # not needed: skipped
        await wait_for(lambda: "499\n" in received.texts(), timeout=10)
        assert received.texts() == "".join(f"{i}\n" for i in range(500))
        messages = [m for b in received.batches for m in b.messages]
        streams = [m for m in messages if m["header"]["msg_type"] == "stream"]
        assert len(streams) < 500 / 10  # runs merged into a few messages
        await wait_for(lambda: sum(b.received for b in received.batches) >= 501, timeout=10)
        assert all(b.subscription is subscription for b in received.batches)
        assert len(reader_threads()) == 1


async def test_sync_hands_over_what_is_waiting_at_once(
    publisher: FakeKernelIOPub, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_reader() as (iopub, received):
        subscription = publisher.subscription()
        iopub.add(subscription)
        await until_live(publisher, received)
        monkeypatch.setattr(reader_module, "HANDOFF_INTERVAL", 3600)  # a pass, then an hour's rest
        await asyncio.sleep(0.1)
        publisher.publish("stream", {"name": "stdout", "text": "probe\n"})
        await wait_for(lambda: "probe" in received.texts(), timeout=10)  # now it rests
        received.batches.clear()
        publisher.publish("stream", {"name": "stdout", "text": "waiting\n"})
        await asyncio.sleep(0.2)  # in the thread's pending batch (or the socket)
        assert received.texts() == ""
        iopub.sync()
        received.take()
        assert received.texts() == "waiting\n"


async def test_remove_hands_over_everything_then_closes(publisher: FakeKernelIOPub) -> None:
    async with running_reader() as (iopub, received):
        subscription = publisher.subscription()
        iopub.add(subscription)
        await until_live(publisher, received)
        for i in range(3000):
            publisher.publish("stream", {"name": "stdout", "text": f"{i}\n"})
        await asyncio.sleep(0.2)
        iopub.remove(subscription)
        received.take()
        assert received.texts().endswith("2999\n")
        assert subscription.socket is not None
        assert subscription.socket.closed


async def test_an_error_in_the_thread_is_logged_and_reading_goes_on(
    publisher: FakeKernelIOPub,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_reader() as (iopub, received):
        subscription = publisher.subscription()
        iopub.add(subscription)
        await until_live(publisher, received)
        read = iopub._read
        failures: list[int] = []

        def failing_once(*args: Any) -> int:
            if not failures:
                failures.append(1)
                raise RuntimeError("unexpected")
            return read(*args)

        monkeypatch.setattr(iopub, "_read", failing_once)
        for i in range(20):
            publisher.publish("stream", {"name": "stdout", "text": f"{i}\n"})
        await wait_for(lambda: "19\n" in received.texts(), timeout=10)
        assert failures
        assert iopub.errors == 1
        assert "error in the IOPub reader; going on" in caplog.text
        assert received.texts().endswith("".join(f"{i}\n" for i in range(20)))
        assert iopub.running


async def test_stop_ends_the_thread_and_closes_every_socket(publisher: FakeKernelIOPub) -> None:
    async with running_reader() as (iopub, received):
        subscriptions = [publisher.subscription(f"k{i}") for i in range(3)]
        for subscription in subscriptions:
            iopub.add(subscription)
        await until_live(publisher, received)
        publisher.publish("stream", {"name": "stdout", "text": "last\n"})
        await asyncio.sleep(0.05)
        iopub.stop()
        assert not iopub.running
        assert reader_threads() == []
        assert all(s.socket is not None and s.socket.closed for s in subscriptions)
        received.take()  # what was read before the stop was handed over
    iopub.stop()  # idempotent
