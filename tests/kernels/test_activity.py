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


def test_the_rules_are_jupyter_servers_own_message_by_message() -> None:
    """jupyter_server's own ``record_activity`` and ours, fed the same messages one by one,
    leave the same state and move last_activity on the same messages."""
    manager = AsyncMappingKernelManager()
    theirs, ours = WatchedKernel(), WatchedKernel()
    manager._kernels["theirs"] = theirs
    manager._kernels["ours"] = ours
    manager.start_watching_activity("theirs")
    record_activity = theirs.stream.callback
    keeper = ActivityKeeper(manager, logging.getLogger("test"))
    keeper._kept["ours"] = ours  # as take_over leaves it (tested with a server below)
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


async def test_a_restarted_kernel_is_kept_again(
    jp_fetch: Any, jp_ws_fetch: Any, capture: Any
) -> None:
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({}))
    kernel_id = json.loads(response.body)["id"]
    assert await capture.listener.wait_live(kernel_id, 30)
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    msg_id = await client.execute("print('after the restart')")
    await client.wait_idle(msg_id)
    kernel = capture.kernel_manager.get_kernel(kernel_id)
    assert kernel_id in capture.listener.activity.kernel_ids
    assert kernel._activity_stream is None
    capture.listener.catch_up()
    assert (await kernel_model(jp_fetch, kernel_id))["execution_state"] == "idle"
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
