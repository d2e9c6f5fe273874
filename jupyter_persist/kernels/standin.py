"""Answer a page's widget requests for a kernel too busy with a cell to answer them yet.

JupyterLab's widget manager loads a kernel's widgets with two shell requests, which a
kernel answers only between cells: ``request_states`` on a control comm
(``jupyter.widget.control``), then, as soon as the notebook holds saved widget state,
a ``comm_info_request`` for the ``jupyter.widget`` target. A page reopened while a cell
draws a progress bar would say "Loading widget..." until the cell ends, and then show
only its end. The server follows every widget comm of the kernel and holds the state
the kernel would send, so while a cell runs it answers both in the kernel's stead,
exactly as ipykernel and ipywidgets do; the page's models are then connected to the
kernel's comms and follow its updates live. The requests still reach the kernel, whose
own answers after the cell find nobody waiting for them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_client.session import Session

CONTROL_TARGET = "jupyter.widget.control"
WIDGET_TARGET = "jupyter.widget"
#: Control comms remembered per connection (a page opens one per load of the widgets).
CONTROL_COMMS_KEPT = 16

#: (states by model id, buffer paths, buffers): the content of ipywidgets' answer.
ManagerStates = tuple[dict[str, Any], list[list[Any]], list[bytes]]


@dataclass(frozen=True)
class BusyKernelWidgets:
    """What the server answers with while a kernel runs a cell."""

    states: ManagerStates
    #: The running execution's ``execute_request`` id and client session: a status
    #: answered for a request must leave the page seeing the kernel busy with it.
    running_msg_id: str
    running_session: str


@dataclass(frozen=True)
class WidgetRequest:
    """A widget manager's request the server can answer: which one, and its comm."""

    kind: str  # "request_states" or "comm_info"
    comm_id: str = ""


class ControlComms:
    """Per websocket connection: the widget manager's control comms and its requests."""

    def __init__(self) -> None:
        self._comm_ids: list[str] = []

    def request(
        self, channel: str, header: Mapping[str, Any], content: Mapping[str, Any]
    ) -> WidgetRequest | None:
        """The widget request this client message makes, if it is one."""
        if channel != "shell":
            return None
        msg_type = header.get("msg_type")
        if msg_type == "comm_info_request":
            return (
                WidgetRequest("comm_info") if content.get("target_name") == WIDGET_TARGET else None
            )
        comm_id = content.get("comm_id")
        if not isinstance(comm_id, str):
            return None
        if msg_type == "comm_open" and content.get("target_name") == CONTROL_TARGET:
            self._comm_ids = [*self._comm_ids, comm_id][-CONTROL_COMMS_KEPT:]
        elif msg_type == "comm_close" and comm_id in self._comm_ids:
            self._comm_ids.remove(comm_id)
        elif msg_type == "comm_msg" and comm_id in self._comm_ids:
            data = content.get("data")
            if isinstance(data, Mapping) and data.get("method") == "request_states":
                return WidgetRequest("request_states", comm_id)
        return None


def answer(
    session: Session,
    request: WidgetRequest,
    request_header: Mapping[str, Any],
    busy: BusyKernelWidgets,
) -> list[tuple[str, list[bytes]]]:
    """The kernel's answer to ``request`` as (channel, signed frames), in order."""
    parent = dict(request_header)
    if request.kind == "request_states":
        models, paths, buffers = busy.states
        content = {
            "comm_id": request.comm_id,
            "data": {"method": "update_states", "states": models, "buffer_paths": paths},
        }
        return [("iopub", _frames(session, "comm_msg", content, parent) + buffers)]
    comms = {model_id: {"target_name": WIDGET_TARGET} for model_id in busy.states[0]}
    running = {
        "msg_id": busy.running_msg_id,
        "msg_type": "execute_request",
        "session": busy.running_session,
        "username": "",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": "5.3",
    }
    return [
        ("iopub", _frames(session, "status", {"execution_state": "busy"}, parent)),
        ("shell", _frames(session, "comm_info_reply", {"status": "ok", "comms": comms}, parent)),
        # The page waits for the request's idle; then it must see the cell's busy again.
        ("iopub", _frames(session, "status", {"execution_state": "idle"}, parent)),
        ("iopub", _frames(session, "status", {"execution_state": "busy"}, running)),
    ]


def _frames(
    session: Session, msg_type: str, content: dict[str, Any], parent: dict[str, Any]
) -> list[bytes]:
    frames: list[bytes] = session.serialize(session.msg(msg_type, content=content, parent=parent))
    return frames
