"""A gateway's websocket frames, both protocols: what the capture decodes, what it sends."""

from __future__ import annotations

import json
from typing import Any

from jupyter_client.session import Session
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from jupyter_persist.kernels.iopub import V1_PROTOCOL, decode_frame, encode_request, mentions


def message(msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "header": {"msg_id": "m1", "msg_type": msg_type, "session": "k"},
        "parent_header": {"msg_id": "p1", "msg_type": "execute_request"},
        "metadata": {},
        "content": content,
    }


def v1_frame(channel: str, msg: dict[str, Any], buffers: tuple[bytes, ...] = ()) -> bytes:
    keys = ("header", "parent_header", "metadata", "content")
    parts = [json.dumps(msg[key]).encode() for key in keys]
    return bytes(serialize_msg_to_ws_v1([*parts, *buffers], channel))


def legacy_frame(channel: str, msg: dict[str, Any]) -> str:
    return json.dumps({**msg, "channel": channel, "buffers": []})


STREAM = message("stream", {"name": "stdout", "text": "hi\n"})
COMM = message("comm_msg", {"comm_id": "c", "data": {"method": "update", "buffer_paths": [["x"]]}})


def test_v1_iopub_stream_is_decoded() -> None:
    channel, msg = decode_frame(v1_frame("iopub", STREAM), V1_PROTOCOL)
    assert channel == "iopub"
    assert msg is not None
    assert msg["content"] == {"name": "stdout", "text": "hi\n"}
    assert msg["parent_header"]["msg_id"] == "p1"
    assert msg["buffers"] == []


def test_v1_comm_buffers_are_kept_and_other_buffers_dropped() -> None:
    _, msg = decode_frame(v1_frame("iopub", COMM, [b"\x00\x01"]), V1_PROTOCOL)
    assert msg is not None
    assert msg["buffers"] == [b"\x00\x01"]
    _, msg = decode_frame(v1_frame("iopub", STREAM, [b"\x00"]), V1_PROTOCOL)
    assert msg is not None
    assert msg["buffers"] == []


def test_other_channels_and_types_are_skipped() -> None:
    assert decode_frame(v1_frame("shell", message("execute_reply", {})), V1_PROTOCOL) == (
        "shell",
        None,
    )
    assert decode_frame(v1_frame("iopub", message("debug_event", {})), V1_PROTOCOL)[1] is None
    assert decode_frame(legacy_frame("shell", STREAM), None) == ("shell", None)


def test_legacy_text_and_binary_frames() -> None:
    channel, msg = decode_frame(legacy_frame("iopub", STREAM), None)
    assert channel == "iopub"
    assert msg is not None
    assert msg["content"]["text"] == "hi\n"
    binary = serialize_binary_message({**COMM, "channel": "iopub", "buffers": [b"\xff\xfe"]})
    _, msg = decode_frame(binary, None)
    assert msg is not None
    assert msg["buffers"] == [b"\xff\xfe"]


def test_requests_in_both_protocols() -> None:
    session = Session(session="ours", username="jupyter-persist")
    frame = encode_request(session, "kernel_info_request", "control", V1_PROTOCOL)
    channel, parts = deserialize_msg_from_ws_v1(frame)
    assert channel == "control"
    header = json.loads(parts[0])
    assert (header["msg_type"], header["session"]) == ("kernel_info_request", "ours")
    legacy = json.loads(encode_request(session, "kernel_info_request", "shell", None))
    assert legacy["channel"] == "shell"
    assert legacy["header"]["msg_type"] == "kernel_info_request"


def test_mentions_looks_at_the_start_only() -> None:
    assert mentions(v1_frame("iopub", message("shutdown_reply", {})), "shutdown_reply")
    assert mentions('{"header": {"msg_type": "shutdown_reply"}}', "shutdown_reply")
    assert not mentions("x" * 5000 + "shutdown_reply", "shutdown_reply")
