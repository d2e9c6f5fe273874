"""The extension keeps kernels' last_activity and execution_state as the server's watcher would."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import LabLikeClient, make_notebook
from jupyter_client.session import Session
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

from jupyter_persist.kernels.activity import ActivityKeeper
from jupyter_persist.kernels.iopub import IOPubDecoder
from jupyter_persist.kernels.readloop import ReadLoop, subscription_spec


class RecordedStream:
    """Where jupyter_server's watcher registers its callback (it reads nothing itself)."""

    def __init__(self) -> None:
        self.callback: Any = None

    def on_recv(self, callback: Any) -> None:
        self.callback = callback

    def closed(self) -> bool:
        return False


class WatchedKernel:
    """What ``start_watching_activity`` reads and writes of a kernel."""

    def __init__(self) -> None:
        self.session = Session(key=b"secret")
        self.stream = RecordedStream()
        self.execution_state = "starting"
        self.last_activity: Any = None
        self.reason = ""

    def connect_iopub(self) -> RecordedStream:
        return self.stream


def iopub_messages(session: Session) -> list[dict[str, Any]]:
    """A kernel's IOPub from its start through requests of every kind, in order."""

    def request(msg_type: str) -> dict[str, Any]:
        return session.msg_header(msg_type)

    def msg(msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None) -> Any:
        return session.msg(msg_type, content, parent=parent or {})

    info, execute, comm = (
        request("kernel_info_request"),
        request("execute_request"),
        request("comm_msg"),
    )
    debug, custom = request("debug_request"), request("my_extension_request")
    sequence = [
        msg("iopub_welcome", {"subscription": ""}, None),  # ipykernel 7, at each subscription
        msg("status", {"execution_state": "starting"}, None),
        msg("status", {"execution_state": "busy"}, info),
        msg("status", {"execution_state": "idle"}, info),
        msg("stream", {"name": "stdout", "text": "no parent"}, None),
        msg("status", {"execution_state": "busy"}, execute),
        msg("execute_input", {"code": "1", "execution_count": 1}, execute),
        msg("stream", {"name": "stdout", "text": "1"}, execute),
        msg("status", {"execution_state": "busy"}, debug),  # a debugger request meanwhile
        msg("status", {"execution_state": "idle"}, debug),
        msg("display_data", {"data": {}, "metadata": {}}, execute),
        msg("status", {"execution_state": "idle"}, execute),
        msg("comm_msg", {"comm_id": "c", "data": {}}, comm),
        msg("status", {"execution_state": "busy"}, comm),
        msg("stream", {"name": "stdout", "text": "widget"}, comm),
        msg("status", {"execution_state": "idle"}, comm),
        msg("status", {"execution_state": "busy"}, custom),
        msg("my_extension_reply", {}, custom),
        msg("status", {"execution_state": "idle"}, custom),
    ]
    return sequence


def watched_and_kept() -> tuple[WatchedKernel, WatchedKernel, Any, ActivityKeeper]:
    """Two kernels of one manager: "theirs" followed by jupyter_server's own watcher
    (and its ``record_activity`` callback), "ours" kept by an ActivityKeeper."""
    manager = AsyncMappingKernelManager()
    theirs, ours = WatchedKernel(), WatchedKernel()
    manager._kernels["theirs"] = theirs
    manager._kernels["ours"] = ours
    manager.start_watching_activity("theirs")
    keeper = ActivityKeeper(manager, logging.getLogger("test"))
    keeper._kept["ours"] = ours  # as take_over leaves it (tested with a server below)
    return theirs, ours, theirs.stream.callback, keeper


def test_the_rules_are_jupyter_servers_own_message_by_message() -> None:
    """jupyter_server's own ``record_activity`` and ours, fed the same messages one by one,
    leave the same state and move last_activity on the same messages."""
    theirs, ours, record_activity, keeper = watched_and_kept()
    # What our reader's activity lane makes of the same parts, and what it hands over.
    activity = IOPubDecoder(theirs.session).activity
    moved = []
    for msg in iopub_messages(theirs.session):
        theirs.last_activity = ours.last_activity = None
        parts = theirs.session.serialize(msg)
        record_activity(parts)
        records = json.loads(json.dumps([activity([zmq.Frame(part) for part in parts])]))
        keeper.record("ours", records)
        assert ours.execution_state == theirs.execution_state, msg
        assert (ours.last_activity is None) == (theirs.last_activity is None), msg
        moved.append(theirs.last_activity is not None)
    # The sequence does reach every branch: both states, moved and not.
    assert True in moved
    assert False in moved
    states = {m["content"].get("execution_state") for m in iopub_messages(theirs.session)}
    assert {"busy", "idle", "starting"} <= states


def ipykernel_topic(msg: dict[str, Any]) -> bytes:
    """The ZMQ topic ipykernel 7 publishes a message under (``Kernel._topic`` and the
    streams', displays' and comms' own), for a kernel whose ident is ``abc``."""
    msg_type = msg["msg_type"]
    if msg_type in {"status", "execute_input", "error", "debug_event"}:
        return f"kernel.abc.{msg_type}".encode()
    if msg_type == "stream":
        return f"stream.{msg['content']['name']}".encode()
    if msg_type.startswith("comm_"):
        return f"comm-{msg['content']['comm_id']}".encode()
    if msg_type == "iopub_welcome":
        return b""  # a welcome to a subscription to everything reaches every subscriber
    return msg_type.encode()


def wait_for_subscription(publisher: zmq.Socket[bytes], topic: bytes) -> None:
    """Until the publisher (an XPUB, verbose) has seen a subscription to ``topic``."""
    while True:
        assert publisher.poll(5000), f"no subscription to {topic!r}"
        if publisher.recv() == b"\x01" + topic:
            return


def test_a_lane_narrowed_to_the_status_topic_keeps_jupyter_servers_rules(
    tmp_path: Path,
) -> None:
    """The reader's activity lane, narrowed to ipykernel's ``kernel.`` topic after the
    first status, and the capture's side together leave the same state and move
    last_activity on the same messages as jupyter_server's watcher, message by message;
    a status under another topic makes the lane read everything again."""
    session = Session(key=b"secret")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    server = context.socket(zmq.PAIR)
    server.bind("inproc://server")
    publisher = context.socket(zmq.XPUB)
    publisher.setsockopt(zmq.XPUB_VERBOSE, 1)
    port = publisher.bind_to_random_port("tcp://127.0.0.1")
    try:
        loop = ReadLoop(context, "inproc://server")
        spec = subscription_spec(f"tcp://127.0.0.1:{port}", session, None, activity=True)
        loop.add(b"1", spec)
        held = loop.by_id[b"1"]
        assert held.lane is not None
        wait_for_subscription(publisher, b"")
        wait_for_subscription(publisher, b"")  # the capture's and the lane's

        theirs, ours, record_activity, keeper = watched_and_kept()

        def publish_and_hand_over(msg: dict[str, Any], topic: bytes) -> int:
            """Publish one message; hand what the reader read to the keeper as the
            listener does (the lane's records first); how many the lane read."""
            publisher.send_multipart([topic, *session.serialize(msg)])
            assert held.socket.poll(5000)
            covered = held.lane_topic is None or topic.startswith(held.lane_topic)
            if covered:
                assert held.lane.poll(5000)  # type: ignore[union-attr]
            lane_read = len(held.activity)
            loop.read_lane(held)
            lane_read = len(held.activity) - lane_read
            assert loop.read(held, 10, None) == 1
            records = json.loads(json.dumps(held.activity))
            held.activity = []
            keeper.record("ours", records)
            for chunk in held.chunks:
                keeper.record_captured("ours", chunk.messages)
            held.chunks = []
            return lane_read

        lane_read: dict[str, int] = {}
        narrowed = False
        for msg in iopub_messages(session):
            theirs.last_activity = ours.last_activity = None
            topic = ipykernel_topic(msg)
            record_activity([topic, *session.serialize(msg)])
            lane_read[msg["msg_type"]] = lane_read.get(msg["msg_type"], 0) + (
                publish_and_hand_over(msg, topic)
            )
            if held.lane_topic == b"kernel." and not narrowed:
                narrowed = True
                wait_for_subscription(publisher, b"kernel.")
            assert ours.execution_state == theirs.execution_state, msg
            assert (ours.last_activity is None) == (theirs.last_activity is None), msg
        assert held.lane_topic == b"kernel."
        # The lane read every status, and no output.
        statuses = [m for m in iopub_messages(session) if m["msg_type"] == "status"]
        assert lane_read["status"] == len(statuses)
        assert lane_read["stream"] == 0
        assert lane_read["display_data"] == 0
        assert lane_read["comm_msg"] == 0

        # A status under a topic the lane left out: handed over from the capture's
        # side, and the lane reads everything again.
        status = session.msg(
            "status", {"execution_state": "busy"}, parent=session.msg_header("execute_request")
        )
        record_activity([b"other.status", *session.serialize(status)])
        publish_and_hand_over(status, b"other.status")
        assert ours.execution_state == theirs.execution_state == "busy"
        assert held.lane_topic is None
        loop.close(held)
    finally:
        publisher.close(linger=0)
        server.close(linger=0)
        context.destroy(linger=0)


async def kernel_model(jp_fetch: Any, kernel_id: str) -> dict[str, Any]:
    response = await jp_fetch("api", "kernels", kernel_id, method="GET")
    model: dict[str, Any] = json.loads(response.body)
    return model


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    """The extension with the kernels' activity kept (off by default)."""
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
        "PersistExtension": {"track_kernel_activity": True},
    }


async def test_a_live_subscription_keeps_the_activity_and_stops_the_servers_watcher(
    jp_fetch: Any, jp_ws_fetch: Any, capture: Any
) -> None:
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
    kernel_id = json.loads(response.body)["id"]
    kernel = capture.kernel_manager.get_kernel(kernel_id)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)  # the gate waits for live
    await client.wait_ready()
    assert kernel_id in capture.listener.activity.kernel_ids
    assert kernel._activity_stream is None
    capture.listener.catch_up()
    before = await kernel_model(jp_fetch, kernel_id)
    assert before["execution_state"] == "idle"

    msg_id = await client.execute("import time; time.sleep(2)")

    async def state() -> str:
        capture.listener.catch_up()
        return str((await kernel_model(jp_fetch, kernel_id))["execution_state"])

    busy = False
    for _ in range(40):
        if await state() == "busy":
            busy = True
            break
    assert busy, "GET /api/kernels never said busy while the cell ran"
    await client.wait_idle(msg_id)
    capture.listener.catch_up()
    after = await kernel_model(jp_fetch, kernel_id)
    assert after["execution_state"] == "idle"
    assert after["last_activity"] > before["last_activity"]  # ISO 8601 in UTC: ordered as text
    status = json.loads((await jp_fetch("api", "persist", "status", method="GET")).body)
    assert status["kernels_activity_kept"] == 1
    client.close()


async def test_the_state_follows_the_kernel_while_the_capture_is_behind(
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_root_dir: Path,
    notebook_session: Any,
    capture: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The capture's socket is read in order and a flood puts it seconds behind; the
    kernel's state must not wait for it (a client polling for idle saw a flood's end
    12-19 s late): it comes from the activity lane, read apart."""
    code = "import time; time.sleep(1.5); print('after the wait')"
    make_notebook(jp_root_dir / "behind.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("behind.ipynb")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    assert kernel_id in capture.listener.activity.kernel_ids
    listener = capture.listener
    # Nothing the reader hands over is taken now: the capture is behind, as in a flood.
    monkeypatch.setattr(listener, "_take_batches", lambda max_bytes=None: None)
    msg_id = await client.execute(code, cell_id="c")
    states = []
    for _ in range(100):
        state = (await kernel_model(jp_fetch, kernel_id))["execution_state"]
        states.append(state)
        if state == "idle" and "busy" in states:
            break
        await asyncio.sleep(0.05)
    assert "busy" in states, states
    assert states[-1] == "idle", states
    await client.wait_idle(msg_id)
    monkeypatch.undo()
    listener.catch_up()  # the capture, once it catches up, has every output
    execution = capture.store.get(msg_id)
    assert execution is not None
    assert "after the wait" in json.dumps(execution.area.to_json())
    client.close()


async def test_the_servers_watcher_runs_again_while_ours_may_miss_messages(
    jp_fetch: Any, jp_ws_fetch: Any, capture: Any
) -> None:
    """A restart hands the activity back (last_activity kept as it was) until the
    subscription receives from the new process; a detach hands it back for good."""
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
    kernel_id = json.loads(response.body)["id"]
    kernel = capture.kernel_manager.get_kernel(kernel_id)
    assert await capture.listener.wait_live(kernel_id, 30)
    assert kernel._activity_stream is None
    last_activity = kernel.last_activity

    capture.listener.mark_restarting(kernel_id)
    assert kernel_id not in capture.listener.activity.kernel_ids
    assert kernel._activity_stream is not None  # jupyter_server's own watcher again
    assert kernel.last_activity == last_activity
    assert await capture.listener.wait_live(kernel_id, 30)
    assert kernel_id in capture.listener.activity.kernel_ids
    assert kernel._activity_stream is None

    capture.listener.detach(kernel_id)
    assert kernel_id not in capture.listener.activity.kernel_ids
    assert kernel._activity_stream is not None


async def states_while_running(
    jp_fetch: Any, client: LabLikeClient, kernel_id: str, code: str
) -> list[str]:
    """The kernel's execution_state from ``GET /api/kernels`` while ``code`` runs, until
    it is idle again (or 5 s); it must have been busy, then idle."""
    msg_id = await client.execute(code)
    states: list[str] = []
    for _ in range(100):
        states.append((await kernel_model(jp_fetch, kernel_id))["execution_state"])
        if states[-1] == "idle" and "busy" in states:
            break
        await asyncio.sleep(0.05)
    await client.wait_idle(msg_id)
    assert "busy" in states, states
    assert states[-1] == "idle", states
    return states


async def test_the_lane_reads_statuses_not_outputs(
    jp_fetch: Any, jp_ws_fetch: Any, capture: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the kernel's first status is read, its activity lane reads the kernel's
    statuses (and the rest of ipykernel's ``kernel.`` topic), not its 3,000 prints:
    a subscriber that keeps up with every message slows a printing kernel down."""
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
    kernel_id = json.loads(response.body)["id"]
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    keeper = capture.listener.activity
    assert kernel_id in keeper.kernel_ids
    recorded: list[Any] = []
    record = keeper.record

    def counting(kernel_id: str, records: list[Any]) -> None:
        recorded.extend(records)
        record(kernel_id, records)

    monkeypatch.setattr(keeper, "record", counting)
    before = (await kernel_model(jp_fetch, kernel_id))["last_activity"]
    code = "import time\nfor i in range(3000): print(i, flush=True)\ntime.sleep(1)"
    await states_while_running(jp_fetch, client, kernel_id, code)
    types = [msg_type for msg_type, _, _ in recorded]
    assert "status" in types
    assert types.count("stream") == 0, types[:20]
    assert len(types) < 20, types
    capture.listener.catch_up()
    # The prints move last_activity from the capture's side.
    assert (await kernel_model(jp_fetch, kernel_id))["last_activity"] > before
    client.close()


async def test_a_restarted_kernel_is_kept_again(
    jp_fetch: Any, jp_ws_fetch: Any, capture: Any
) -> None:
    """And its state follows the new process (whose statuses come under a new topic:
    ipykernel's ``kernel.<ident>.status``, with a new ident)."""
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
    kernel_id = json.loads(response.body)["id"]
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    await states_while_running(jp_fetch, client, kernel_id, "import time; time.sleep(1)")
    client.close()
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    msg_id = await client.execute("print('after the restart')")
    await client.wait_idle(msg_id)
    kernel = capture.kernel_manager.get_kernel(kernel_id)
    assert kernel_id in capture.listener.activity.kernel_ids
    assert kernel._activity_stream is None
    capture.listener.catch_up()
    assert (await kernel_model(jp_fetch, kernel_id))["execution_state"] == "idle"
    await states_while_running(jp_fetch, client, kernel_id, "import time; time.sleep(1)")
    client.close()


@pytest.mark.parametrize(
    "jp_server_config",
    [{"ServerApp": {"jpserver_extensions": {"jupyter_persist": True}}}],
)
async def test_off_by_default_the_servers_watcher_stays(jp_fetch: Any, capture: Any) -> None:
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
    kernel_id = json.loads(response.body)["id"]
    assert await capture.listener.wait_live(kernel_id, 30)
    assert capture.kernel_manager.get_kernel(kernel_id)._activity_stream is not None
    assert capture.listener.activity.kernel_ids == set()
    response = await jp_fetch("api", "persist", "status", method="GET")
    status = json.loads(response.body)
    assert status["config"]["track_kernel_activity"] is False
    assert status["kernels_activity_kept"] == 0


async def test_taking_over_during_a_restart_leaves_the_restart_waiting(
    jp_fetch: Any, capture: Any
) -> None:
    """jupyter_server's ``stop_watching_activity`` also ends a restart's wait for the new
    process's reply (its ``_pending_restart_cleanup``), so that the restart never
    returns: taking over during a restart must not call it."""
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
    kernel_id = json.loads(response.body)["id"]
    kernel = capture.kernel_manager.get_kernel(kernel_id)
    assert await capture.listener.wait_live(kernel_id, 30)
    capture.listener.mark_restarting(kernel_id)  # the server's watcher again
    ended: list[bool] = []
    kernel._pending_restart_cleanup = lambda: ended.append(True)
    try:
        assert await capture.listener.wait_live(kernel_id, 30)
        assert kernel_id in capture.listener.activity.kernel_ids
        assert kernel._activity_stream is None
        assert ended == []
    finally:
        kernel._pending_restart_cleanup = None
