"""Learn, on the server's side of the kernel websocket, which cell each execution is for.

The cell id travels only in the ``execute_request`` metadata a client sends over the
kernel websocket, so we wrap the server's configured websocket connection class in a
subclass that reads those requests (both wire protocols) before passing them on
unchanged, and that counts the clients attached to each kernel.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from dataclasses import dataclass, replace
from typing import Any, Protocol

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

from .iopub import V1_PROTOCOL
from .replay import bound_replay_buffer
from .standin import BusyKernelWidgets, ControlComms, answer

#: Key of the capture manager in the tornado settings.
#: Where the extension's capture manager is in the server's settings (the API's view).
SETTINGS_KEY = "jupyter_persist_capture"
#: Where the websocket hooks find what they talk to (a :class:`CaptureSink`).
SINK_SETTINGS_KEY = "jupyter_persist_websocket_sink"


@dataclass(frozen=True)
class ExecuteRequest:
    """What the capture needs to know of an ``execute_request``."""

    msg_id: str
    code: str
    cell_id: str | None
    #: The sending client's session id (``header.session``).
    client_session: str | None = None


class CaptureSink(Protocol):
    """The part of the capture manager the websocket connection talks to."""

    def on_execute_request(self, kernel_id: str, request: ExecuteRequest) -> None: ...

    def client_attached(self, kernel_id: str, session: str = "") -> None: ...

    async def until_capturing(self, kernel_id: str) -> None: ...

    async def before_replay(self, kernel_id: str, session_key: str) -> None: ...

    def on_input_request(self, kernel_id: str, msg: dict[str, Any]) -> None: ...

    def widgets_while_busy(self, kernel_id: str) -> BusyKernelWidgets | None: ...

    def client_detached(self, kernel_id: str, session: str = "") -> None: ...

    @property
    def replay_buffer_max_bytes(self) -> int: ...


def parse_client_message(
    ws_message: str | bytes, subprotocol: str | None
) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """(channel, header, metadata, content) of a client's websocket message, both protocols."""
    if subprotocol == V1_PROTOCOL:
        if not isinstance(ws_message, bytes):
            return None
        channel, parts = deserialize_msg_from_ws_v1(ws_message)
        if len(parts) < 4:
            return None
        header, metadata, content = (json.loads(parts[i]) for i in (0, 2, 3))
    else:
        if isinstance(ws_message, bytes):
            msg = deserialize_binary_message(ws_message)
        else:
            msg = json.loads(ws_message)
        channel = msg.get("channel", "shell")
        header = msg.get("header") or {}
        metadata = msg.get("metadata") or {}
        content = msg.get("content") or {}
    if not all(isinstance(part, dict) for part in (header, metadata, content)):
        return None
    return str(channel), header, metadata, content


def _carries(ws_message: str | bytes, marker: str) -> bool:
    """A cheap test before parsing: most client messages are of no interest."""
    if isinstance(ws_message, bytes):
        return marker.encode() in ws_message
    return marker in ws_message


def parse_execute_request(
    ws_message: str | bytes, subprotocol: str | None
) -> ExecuteRequest | None:
    """Return the execute request carried by a client's websocket message, if it is one."""
    if not _carries(ws_message, "execute_request"):
        return None
    parsed = parse_client_message(ws_message, subprotocol)
    if parsed is None:
        return None
    channel, header, metadata, content = parsed
    if channel != "shell" or header.get("msg_type") != "execute_request":
        return None
    msg_id = header.get("msg_id")
    code = content.get("code")
    if not isinstance(msg_id, str) or not isinstance(code, str):
        return None
    cell_id = metadata.get("cellId")
    session = header.get("session")
    return ExecuteRequest(
        msg_id,
        code,
        cell_id if isinstance(cell_id, str) and cell_id else None,
        session if isinstance(session, str) and session else None,
    )


class CaptureConnectionMixin:
    """Mixed in front of the server's kernel websocket connection class."""

    websocket_handler: Any
    kernel_id: str
    kernel_manager: Any
    log: Any

    def _persist_sink(self) -> CaptureSink | None:
        handler = getattr(self, "websocket_handler", None)
        settings = getattr(handler, "settings", None) or {}
        sink: CaptureSink | None = settings.get(SINK_SETTINGS_KEY)
        return sink

    def _persist_subprotocol(self) -> str | None:
        protocol = getattr(self, "subprotocol", None)
        if protocol is None:
            protocol = getattr(
                getattr(self, "websocket_handler", None), "selected_subprotocol", None
            )
        return protocol if isinstance(protocol, str) else None

    def handle_incoming_message(self, incoming_msg: Any) -> Any:
        """Note execute requests, then let the wrapped class send the message on."""
        try:
            request = parse_execute_request(incoming_msg, self._persist_subprotocol())
            sink = self._persist_sink()
            session = getattr(self, "_persist_session", "")
            if request is not None and session:
                # The session the client is counted under (its websocket's session_id;
                # JupyterLab puts the same id in every header).
                request = replace(request, client_session=session)
            if request is not None and sink is not None:
                sink.on_execute_request(self.kernel_id, request)
            if sink is not None and request is None and _carries(incoming_msg, "comm_"):
                self._persist_widget_request(incoming_msg, sink)
        except Exception as err:
            self.log.debug("jupyter_persist: could not read a client message: %s", err)
        return super().handle_incoming_message(incoming_msg)  # type: ignore[misc]

    def _persist_widget_request(self, incoming_msg: Any, sink: CaptureSink) -> None:
        """Answer a widget manager's requests while a cell runs (see :mod:`.standin`)."""
        if not isinstance(self, ZMQChannelsWebsocketConnection):
            return  # a gateway's connection relays text frames; answers are ZMQ frames
        parsed = parse_client_message(incoming_msg, self._persist_subprotocol())
        if parsed is None:
            return
        channel, header, _, content = parsed
        control = getattr(self, "_persist_control", None)
        if control is None:
            control = self._persist_control = ControlComms()
        request = control.request(channel, header, content)
        if request is None:
            return
        busy = sink.widgets_while_busy(self.kernel_id)
        session = getattr(self, "session", None)
        if busy is None or session is None:
            return
        for stream, frames in answer(session, request, header, busy):
            self.handle_outgoing_message(stream, frames)  # type: ignore[attr-defined]
        self.log.info(
            "jupyter_persist: kernel %s runs a cell; answered a page's %s for its %d widget(s)",
            self.kernel_id,
            request.kind,
            len(busy.states[0]),
        )

    def connect(self) -> Any:
        """Count the client as attached; connect once the capture receives the kernel.

        The handler awaits this before it reads any message from the client (tornado
        calls ``on_message`` only after ``open`` returns), so no execution can start
        before the server-side subscription is live.
        """
        sink = self._persist_sink()
        if sink is None:
            return super().connect()  # type: ignore[misc]
        if not getattr(self, "_persist_attached", False):
            self._persist_attached = True
            # The server set the session from the websocket's session_id before this.
            self._persist_session = str(getattr(getattr(self, "session", None), "session", ""))
            sink.client_attached(self.kernel_id, self._persist_session)
        # The server counts a client as its connection opens (``notify_connect``, seen by
        # ``GET /api/kernels`` and by the idle culler); ours opens after the gate, so the
        # client is counted now and the count handed over when it does.
        self._persist_counted = self._persist_count(+1)
        return asyncio.ensure_future(self._persist_connect_when_capturing(sink))

    def _persist_count(self, step: int) -> bool:
        manager = getattr(self, "multi_kernel_manager", None)
        notify = getattr(manager, "notify_connect" if step > 0 else "notify_disconnect", None)
        if notify is None:
            return False
        notify(self.kernel_id)
        return True

    async def _persist_connect_when_capturing(self, sink: CaptureSink) -> Any:
        await sink.until_capturing(self.kernel_id)
        await sink.before_replay(self.kernel_id, getattr(self, "session_key", ""))
        manager = getattr(self, "multi_kernel_manager", None)
        if manager is not None and self.kernel_id not in manager:
            # Shut down (or the server stopping) while the gate held the client. The
            # server's connect() would still open channels to it that nothing closes; with
            # a synchronous kernel manager they stay registered on jupyter_core's runner
            # loop after their sockets close, and a later socket given the same descriptor
            # fails there ("fd N added twice").
            self.log.info(
                "jupyter_persist: kernel %s was shut down before its websocket connected; "
                "closing the websocket",
                self.kernel_id,
            )
            self.disconnect()
            handler = getattr(self, "websocket_handler", None)
            if handler is not None:
                handler.close()
            return None
        if getattr(self, "_persist_counted", False):
            self._persist_counted = False
            self._persist_count(-1)  # the server's connect() counts the client itself
        connected = super().connect()  # type: ignore[misc]
        if inspect.isawaitable(connected):
            return await connected
        return connected

    def disconnect(self) -> Any:
        """Count the client as gone (once, although disconnect may run twice)."""
        # The server's disconnect() uncounts the client, also one counted only by us.
        self._persist_counted = False
        try:
            return super().disconnect()  # type: ignore[misc]
        finally:
            sink = self._persist_sink()
            if sink is not None and getattr(self, "_persist_attached", False):
                self._persist_attached = False
                sink.client_detached(self.kernel_id, getattr(self, "_persist_session", ""))
                self._persist_watch_stdin(sink)
                bound_replay_buffer(
                    getattr(self, "multi_kernel_manager", None),
                    self.kernel_id,
                    getattr(self, "session_key", ""),
                    sink.replay_buffer_max_bytes,
                    log=self.log,
                    session=getattr(getattr(self, "kernel_manager", None), "session", None),
                )

    def _persist_watch_stdin(self, sink: CaptureSink) -> None:
        """Notice input requests that reach the server's buffer once the client is gone.

        When the last client leaves, jupyter_server keeps the client's channels and
        buffers what arrives on them for a reconnect; a kernel waiting in ``input()``
        sends its request there. We look at each buffered stdin message on its way in.
        """
        stdin = (getattr(self, "channels", None) or {}).get("stdin")
        buffer_message = getattr(stdin, "_recv_callback", None)
        if stdin is None or buffer_message is None or stdin.closed():
            return
        session = self.kernel_manager.session
        kernel_id = self.kernel_id

        def observe(msg_list: list[Any]) -> None:
            try:
                _, fed = session.feed_identities(msg_list)
                msg = session.deserialize(fed)
                if msg["header"]["msg_type"] == "input_request":
                    sink.on_input_request(kernel_id, msg)
            except Exception as err:
                self.log.debug("jupyter_persist: unreadable stdin message: %s", err)
            buffer_message(msg_list)

        stdin.on_recv(observe)


def compose_connection_class(base: type) -> type:
    """Return ``base`` with the capture mixed in (``base`` itself if already composed)."""
    if issubclass(base, CaptureConnectionMixin):
        return base
    return type(f"Persist{base.__name__}", (CaptureConnectionMixin, base), {})
