"""Answering a page's widget requests in the stead of a kernel busy with a cell."""

from __future__ import annotations

from typing import Any

from jupyter_client.session import Session

from jupyter_persist.kernels.standin import (
    CONTROL_COMMS_KEPT,
    BusyKernelWidgets,
    ControlComms,
    WidgetRequest,
    answer,
)
from jupyter_persist.model.widgets import WidgetModel, manager_states

CONTROL = "jupyter.widget.control"


def shell(msg_type: str, comm_id: str | None = None, **content: Any) -> tuple[str, dict, dict]:
    body = {"comm_id": comm_id, **content} if comm_id is not None else dict(content)
    return "shell", {"msg_type": msg_type, "msg_id": f"{msg_type}-1"}, body


def test_the_requests_are_recognised_only_where_the_widget_manager_makes_them() -> None:
    comms = ControlComms()
    ask = shell("comm_msg", "ctl", data={"method": "request_states"})
    assert comms.request(*ask) is None  # its control comm was not opened
    assert comms.request(*shell("comm_open", "ctl", target_name=CONTROL)) is None
    assert comms.request(*ask) == WidgetRequest("request_states", "ctl")
    assert comms.request(*shell("comm_msg", "ctl", data={"method": "other"})) is None
    assert comms.request("iopub", *ask[1:]) is None
    assert comms.request(*shell("comm_open", "w", target_name="jupyter.widget")) is None
    assert comms.request(*shell("comm_msg", "w", data={"method": "request_states"})) is None
    comms.request(*shell("comm_close", "ctl", data={}))
    assert comms.request(*ask) is None
    info = shell("comm_info_request", target_name="jupyter.widget")
    assert comms.request(*info) == WidgetRequest("comm_info")
    assert comms.request(*shell("comm_info_request", target_name="other")) is None
    assert comms.request(*shell("comm_info_request")) is None


def test_control_comms_kept_are_bounded() -> None:
    comms = ControlComms()
    for index in range(CONTROL_COMMS_KEPT + 3):
        comms.request(*shell("comm_open", f"c{index}", target_name=CONTROL))
    ask = {"method": "request_states"}
    assert comms.request(*shell("comm_msg", "c0", data=ask)) is None
    assert comms.request(*shell("comm_msg", f"c{CONTROL_COMMS_KEPT + 2}", data=ask))


MODELS = {
    "bar": WidgetModel(
        state={
            "_model_name": "FloatProgressModel",
            "_model_module": "@jupyter-widgets/controls",
            "_model_module_version": "2.0.0",
            "value": 7,
        }
    ),
    "img": WidgetModel(
        state={"_model_name": "ImageModel", "format": "png"}, buffers={("value",): b"\x89PNG"}
    ),
}
BUSY = BusyKernelWidgets(manager_states(MODELS), "exec-1", "runner")


def decoded(session: Session, frames: list[bytes]) -> dict[str, Any]:
    _, fed = session.feed_identities(frames)
    msg: dict[str, Any] = session.deserialize(fed)  # signed with the kernel's key
    return msg


def test_request_states_gets_ipywidgets_update_states_with_buffers_by_path() -> None:
    session = Session(key=b"kernel-key")
    header = session.msg_header("comm_msg")
    [(channel, frames)] = answer(session, WidgetRequest("request_states", "ctl"), header, BUSY)
    msg = decoded(session, frames)
    assert channel == "iopub"
    assert msg["msg_type"] == "comm_msg"
    assert msg["parent_header"]["msg_id"] == header["msg_id"]
    assert msg["content"]["comm_id"] == "ctl"
    data = msg["content"]["data"]
    assert data["method"] == "update_states"
    assert data["states"]["bar"] == {
        "model_name": "FloatProgressModel",
        "model_module": "@jupyter-widgets/controls",
        "model_module_version": "2.0.0",
        "state": MODELS["bar"].state,
    }
    assert data["buffer_paths"] == [["img", "state", "value"]]
    assert [bytes(buffer) for buffer in msg["buffers"]] == [b"\x89PNG"]


def test_comm_info_gets_a_reply_and_the_page_sees_the_cell_running_after_it() -> None:
    session = Session(key=b"kernel-key")
    header = session.msg_header("comm_info_request")
    sent = [
        (channel, decoded(session, frames))
        for channel, frames in answer(session, WidgetRequest("comm_info"), header, BUSY)
    ]
    assert [(channel, msg["msg_type"]) for channel, msg in sent] == [
        ("iopub", "status"),
        ("shell", "comm_info_reply"),
        ("iopub", "status"),
        ("iopub", "status"),
    ]
    reply = sent[1][1]
    assert reply["content"] == {
        "status": "ok",
        "comms": {
            "bar": {"target_name": "jupyter.widget"},
            "img": {"target_name": "jupyter.widget"},
        },
    }
    states = [
        (msg["content"]["execution_state"], msg["parent_header"]["msg_id"])
        for _, msg in sent
        if msg["msg_type"] == "status"
    ]
    assert states == [("busy", header["msg_id"]), ("idle", header["msg_id"]), ("busy", "exec-1")]
    assert all(msg["parent_header"]["msg_id"] == header["msg_id"] for _, msg in sent[:3])
