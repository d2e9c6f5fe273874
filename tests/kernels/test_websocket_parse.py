"""Reading execute requests off both kernel websocket wire protocols."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_server.services.kernels.connection.base import (
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from jupyter_persist.kernels.websocket import V1_PROTOCOL, ExecuteRequest, parse_execute_request


def lab_message(
    msg_type: str = "execute_request", metadata: Any = None, code: str = "print(1)"
) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": "abc",
            "msg_type": msg_type,
            "session": "s",
            "username": "u",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {"cellId": "cell-1", "deletedCells": []} if metadata is None else metadata,
        "content": {"code": code, "silent": False},
    }


def v1(msg: dict[str, Any], channel: str = "shell") -> bytes:
    parts = [
        json.dumps(msg[key]).encode() for key in ("header", "parent_header", "metadata", "content")
    ]
    return bytes(serialize_msg_to_ws_v1(parts, channel))


def legacy(msg: dict[str, Any], channel: str = "shell") -> str:
    return json.dumps({**msg, "channel": channel})


def test_v1_execute_request() -> None:
    assert parse_execute_request(v1(lab_message()), V1_PROTOCOL) == ExecuteRequest(
        "abc", "print(1)", "cell-1", client_session="s"
    )


def test_legacy_json_execute_request() -> None:
    assert parse_execute_request(legacy(lab_message()), None) == ExecuteRequest(
        "abc", "print(1)", "cell-1", client_session="s"
    )


def test_legacy_binary_execute_request() -> None:
    message = {**lab_message(), "channel": "shell", "buffers": [b"\x00"]}
    assert parse_execute_request(serialize_binary_message(message), None) == ExecuteRequest(
        "abc", "print(1)", "cell-1", client_session="s"
    )


@pytest.mark.parametrize(
    "metadata", [{}, {"cellId": ""}, {"cellId": 5}, {"vscode": {"cellUri": "x"}}]
)
def test_requests_without_a_usable_cell_id(metadata: dict[str, Any]) -> None:
    parsed = parse_execute_request(legacy(lab_message(metadata=metadata)), None)
    assert parsed == ExecuteRequest("abc", "print(1)", None, client_session="s")


@pytest.mark.parametrize("session", [None, "", 5])
def test_a_request_without_a_usable_session(session: Any) -> None:
    message = lab_message()
    message["header"]["session"] = session
    parsed = parse_execute_request(legacy(message), None)
    assert parsed == ExecuteRequest("abc", "print(1)", "cell-1", client_session=None)


@pytest.mark.parametrize(
    "ws_message",
    [
        v1(lab_message("kernel_info_request")),
        v1(lab_message(), channel="control"),
        legacy(lab_message("comm_msg")),
        legacy(lab_message(), channel="stdin"),
        legacy({**lab_message(), "content": {"code": None}}),
    ],
)
def test_other_messages_are_not_requests(ws_message: Any) -> None:
    protocol = V1_PROTOCOL if isinstance(ws_message, bytes) else None
    assert parse_execute_request(ws_message, protocol) is None


def test_code_mentioning_execute_request_is_not_confused() -> None:
    message = lab_message("comm_msg", code="'execute_request'")
    assert parse_execute_request(v1(message), V1_PROTOCOL) is None
