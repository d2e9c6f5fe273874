"""The server's replay buffer of a disconnected client is bounded to its newest messages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import LabLikeClient, make_notebook, read_cells, stream_text, wait_for

from jupyter_persist.replay import BoundedReplayBuffer, bound_replay_buffer

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


def test_leaves_other_buffers_alone() -> None:
    log = logging.getLogger("test-replay")

    class KernelManager:
        def __init__(self) -> None:
            self._kernel_buffers = {"k1": {"session_key": "s1", "buffer": [], "channels": {}}}

    manager = KernelManager()
    assert not bound_replay_buffer(manager, "k1", "s1", 0, log)  # bounding off
    assert not bound_replay_buffer(manager, "k1", "other", BOUND, log)  # not this session
    assert not bound_replay_buffer(manager, "k2", "s1", BOUND, log)  # not buffering
    assert not bound_replay_buffer(object(), "k1", "s1", BOUND, log)  # another server
    assert type(manager._kernel_buffers["k1"]["buffer"]) is list
    assert bound_replay_buffer(manager, "k1", "s1", BOUND, log)
    assert isinstance(manager._kernel_buffers["k1"]["buffer"], BoundedReplayBuffer)


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
    assert buffer.size <= BOUND
    assert buffer.dropped > 1000
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
