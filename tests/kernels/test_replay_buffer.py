"""The server's replay buffer of a disconnected client is bounded to its newest messages."""

from __future__ import annotations

import gc
import logging
from collections import deque
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import LabLikeClient, make_notebook, read_cells, stream_text, wait_for
from jupyter_client.session import Session

from jupyter_persist.kernels.replay import (
    BoundedReplayBuffer,
    bound_replay_buffer,
    buffer_to_replay,
)

BOUND = 20_000


def message(size: int, tag: bytes = b"") -> tuple[str, list[bytes]]:
    return ("iopub", [tag, b"x" * (size - len(tag))])


def test_keeps_the_newest_messages_within_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test-replay")
    buffer = BoundedReplayBuffer(1000, "k1", log, [message(300, b"a"), message(300, b"b")])
    with caplog.at_level(logging.INFO, "test-replay"):
        for tag in (b"c", b"d", b"e"):
            buffer.append(message(300, tag))
    assert [parts[0] for _, parts in buffer] == [b"c", b"d", b"e"]
    assert buffer.size == 900
    assert buffer.dropped == 2
    # One log line for the buffer, not one per dropped message.
    assert len([r for r in caplog.records if "replay buffer" in r.getMessage()]) == 1


def test_a_message_larger_than_the_bound_is_still_kept() -> None:
    buffer = BoundedReplayBuffer(100, "k1", logging.getLogger("test-replay"))
    buffer.append(message(50, b"a"))
    buffer.append(message(500, b"b"))
    assert [parts[0] for _, parts in buffer] == [b"b"]


def test_buffered_messages_leave_the_garbage_collectors_work() -> None:
    """Kept as tuples of bytes, which a collection stops tracking; handed out as appended."""
    buffer = BoundedReplayBuffer(0, "k1", logging.getLogger("test-replay"))
    for index in range(100):
        buffer.append(("iopub", [b"%d" % index, zmq.Frame(b"frame"), memoryview(b"view")]))
    gc.collect()
    assert not any(gc.is_tracked(kept) for kept in deque.__iter__(buffer))
    channel, parts = next(iter(buffer))
    assert (channel, parts) == ("iopub", [b"0", b"frame", b"view"])
    assert type(parts) is list  # as jupyter_server appended it
    assert buffer.size == 100 * (5 + 4) + 10 * 1 + 90 * 2  # indexes of one and two digits


def test_leaves_other_buffers_alone() -> None:
    log = logging.getLogger("test-replay")

    class KernelManager:
        def __init__(self) -> None:
            self._kernel_buffers = {"k1": {"session_key": "s1", "buffer": [], "channels": {}}}

    manager = KernelManager()
    assert not bound_replay_buffer(manager, "k1", "other", BOUND, log=log)  # not this session
    assert not bound_replay_buffer(manager, "k2", "s1", BOUND, log=log)  # not buffering
    assert not bound_replay_buffer(object(), "k1", "s1", BOUND, log=log)  # another server
    assert type(manager._kernel_buffers["k1"]["buffer"]) is list
    assert buffer_to_replay(manager, "k1", "s1") is None
    assert bound_replay_buffer(manager, "k1", "s1", BOUND, log=log)
    buffer = manager._kernel_buffers["k1"]["buffer"]
    assert isinstance(buffer, BoundedReplayBuffer)
    assert buffer_to_replay(manager, "k1", "s1") is buffer
    assert buffer_to_replay(manager, "k1", "other") is None


def test_bound_zero_keeps_every_message() -> None:
    """0 turns the bound off; the buffer is still ours, so that it can skip messages."""
    log = logging.getLogger("test-replay")
    manager = type("KernelManager", (), {})()
    manager._kernel_buffers = {"k1": {"session_key": "s1", "buffer": [], "channels": {}}}
    assert bound_replay_buffer(manager, "k1", "s1", 0, log=log)
    buffer = manager._kernel_buffers["k1"]["buffer"]
    for tag in (b"a", b"b", b"c"):
        buffer.append(message(100_000, tag))
    assert [parts[0] for _, parts in buffer] == [b"a", b"b", b"c"]
    assert buffer.dropped == 0


def test_replay_leaves_out_outputs_a_room_holds(caplog: pytest.LogCaptureFixture) -> None:
    """Output messages of executions in ``skip_outputs_of`` are not replayed; others are."""
    session = Session()
    in_room = session.msg("execute_request", {"code": "print(1)"})
    elsewhere = session.msg("execute_request", {"code": "print(2)"})

    def iopub(msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> Any:
        parts = session.serialize(session.msg(msg_type, content, parent=parent))
        return ("iopub", [b"kernel.k1." + msg_type.encode(), *parts])

    messages = [
        iopub("status", {"execution_state": "busy"}, in_room),
        iopub("execute_input", {"code": "print(1)", "execution_count": 1}, in_room),
        iopub("stream", {"name": "stdout", "text": "1\n"}, in_room),
        iopub("clear_output", {"wait": False}, in_room),
        iopub("display_data", {"data": {}, "metadata": {}}, in_room),
        iopub("stream", {"name": "stdout", "text": "2\n"}, elsewhere),
        ("shell", session.serialize(session.msg("execute_reply", {}, parent=in_room))),
        iopub("status", {"execution_state": "idle"}, in_room),
        ("iopub", [b"not a kernel message"]),
    ]
    log = logging.getLogger("test-replay")
    buffer = BoundedReplayBuffer(0, "k1", log, messages, session=session)
    assert list(buffer) == messages  # nothing left out until told
    buffer.skip_outputs_of = frozenset({in_room["header"]["msg_id"]})
    with caplog.at_level(logging.INFO, "test-replay"):
        replayed = list(buffer)
    kept = [messages[i] for i in (0, 1, 5, 6, 7, 8)]
    assert replayed == kept
    assert any("left 3 output message(s) out" in r.getMessage() for r in caplog.records)


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
        "PersistExtension": {"save_interval": 0.5, "replay_buffer_max_bytes": BOUND},
    }


async def test_server_keeps_only_the_newest_messages_for_a_same_session_reconnect(
    jp_serverapp: Any, jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "replay.ipynb"
    code = (
        "import time\nprint('start', flush=True)\ntime.sleep(0.5)\n"
        "for i in range(2000):\n    print(f'line {i:05d} ' + 'x' * 90, flush=True)\n"
        "print('DONE', flush=True)"
    )
    make_notebook(nb_path, [("c", code)])
    _, kernel_id = await notebook_session(nb_path.name)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await client.execute(code, cell_id="c")
    await client.wait_for_output(msg_id, "start")
    client.close()

    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.running, timeout=60)
    buffers = jp_serverapp.kernel_manager._kernel_buffers
    buffer = buffers[kernel_id]["buffer"]
    assert isinstance(buffer, BoundedReplayBuffer)
    # The server's own IOPub stream, which fills its buffer, may trail our subscription.
    await wait_for(lambda: buffer.dropped > 1000, timeout=30, what="the buffer's bound at work")
    assert buffer.size <= BOUND
    # The file has every line, whatever the server's buffer dropped.
    await wait_for(lambda: "DONE" in stream_text(read_cells(nb_path)["c"]), timeout=30)
    assert stream_text(read_cells(nb_path)["c"]).count("line ") == 2000

    # The same page coming back gets the newest messages, ending with the last line.
    back = await LabLikeClient.connect(jp_ws_fetch, kernel_id, session_id=client.session_id)
    await back.wait_for_output(msg_id, "DONE")
    replayed = "".join(
        m["content"]["text"]
        for m in back.received
        if m["header"]["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id
    )
    assert "line 01999" in replayed
    assert "line 00000" not in replayed
    back.close()
