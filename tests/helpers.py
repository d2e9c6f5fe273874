"""A JupyterLab-like kernel websocket client and small helpers for the server tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

V1 = "v1.kernel.websocket.jupyter.org"
LEGACY = "legacy"


def make_notebook(
    path: Path, cells: list[tuple[str, str]], **metadata: Any
) -> nbformat.NotebookNode:
    """Write a notebook whose code cells have the given (id, source) pairs."""
    nb = nbformat.v4.new_notebook(metadata=metadata)
    for cell_id, source in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell["id"] = cell_id
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return nb


def read_notebook(path: Path) -> dict[str, Any]:
    """Read a notebook as plain JSON (raises ``json.JSONDecodeError`` mid-write)."""
    return dict(json.loads(path.read_text(encoding="utf-8")))


def read_cells(path: Path) -> dict[str, Any]:
    """Return the code cells of a notebook on disk by id, as plain JSON."""
    nb = read_notebook(path)
    return {cell.get("id"): cell for cell in nb["cells"] if cell["cell_type"] == "code"}


async def load_cells(path: Path) -> dict[str, Any]:
    """Like :func:`read_cells`, retrying while the server rewrites the file.

    jupyter_server's atomic writing keeps a backup copy but writes the file itself in
    place, so a reader can see a half-written file for a moment.
    """
    for _ in range(100):
        try:
            return read_cells(path)
        except json.JSONDecodeError:
            await asyncio.sleep(0.02)
    return read_cells(path)


def stream_text(cell: dict[str, Any], name: str = "stdout") -> str:
    """Concatenated text of a cell's stream outputs of one name."""
    texts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == name:
            text = output["text"]
            texts.append("".join(text) if isinstance(text, list) else text)
    return "".join(texts)


async def wait_for(
    predicate: Callable[[], bool] | Callable[[], Awaitable[bool]],
    timeout: float = 30,
    interval: float = 0.1,
    what: str = "condition",
) -> None:
    """Poll until ``predicate`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
        except json.JSONDecodeError:  # the file is being rewritten in place
            result = False
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class LabLikeClient:
    """Talks to ``/api/kernels/<id>/channels`` the way JupyterLab does."""

    def __init__(self, ws: WebSocketClientConnection, protocol: str, session_id: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.session_id = session_id
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls, jp_ws_fetch: Any, kernel_id: str, protocol: str = V1, session_id: str | None = None
    ) -> LabLikeClient:
        """Connect as a new page, or as the page of ``session_id`` coming back."""
        session_id = session_id or uuid.uuid4().hex
        kwargs: dict[str, Any] = {}
        if protocol == V1:
            kwargs["subprotocols"] = [V1]
        ws = await jp_ws_fetch(
            "api", "kernels", kernel_id, "channels", params={"session_id": session_id}, **kwargs
        )
        assert (ws.selected_subprotocol == V1) == (protocol == V1)
        return cls(ws, protocol, session_id)

    @classmethod
    async def connect_url(
        cls, base_url: str, token: str, kernel_id: str, protocol: str = V1
    ) -> LabLikeClient:
        """Connect to a server running elsewhere (a subprocess) by its base URL."""
        session_id = uuid.uuid4().hex
        url = base_url.replace("http", "ws", 1).rstrip("/")
        request = HTTPRequest(
            f"{url}/api/kernels/{kernel_id}/channels?session_id={session_id}",
            headers={"Authorization": f"token {token}"},
        )
        ws = await websocket_connect(request, subprotocols=[V1] if protocol == V1 else None)
        return cls(ws, protocol, session_id)

    def _header(self, msg_type: str) -> dict[str, Any]:
        return {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": self.session_id,
            "username": "tester",
            "date": "2026-01-01T00:00:00.000Z",
            "version": "5.3",
        }

    async def send(
        self, channel: str, msg_type: str, content: dict[str, Any], metadata: dict[str, Any]
    ) -> str:
        header = self._header(msg_type)
        msg = {"header": header, "parent_header": {}, "metadata": metadata, "content": content}
        if self.protocol == V1:
            parts = [
                json.dumps(msg[key]).encode()
                for key in ("header", "parent_header", "metadata", "content")
            ]
            await self.ws.write_message(serialize_msg_to_ws_v1(parts, channel), binary=True)
        else:
            await self.ws.write_message(json.dumps({**msg, "channel": channel, "buffers": []}))
        return str(header["msg_id"])

    async def execute(
        self,
        code: str,
        cell_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        allow_stdin: bool = False,
    ) -> str:
        """Send an execute_request as JupyterLab 4 does (``cellId`` in the metadata)."""
        if metadata is None:
            metadata = {"deletedCells": [], "recordTiming": False}
            if cell_id is not None:
                metadata["cellId"] = cell_id
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": allow_stdin,
            "stop_on_error": True,
        }
        return await self.send("shell", "execute_request", content, metadata)

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.read_message(), timeout)
        if raw is None:
            raise ConnectionError("websocket closed")
        if isinstance(raw, bytes) and self.protocol == V1:
            channel, parts = deserialize_msg_from_ws_v1(raw)
            msg = {
                "channel": channel,
                "header": json.loads(parts[0]),
                "parent_header": json.loads(parts[1]),
                "metadata": json.loads(parts[2]),
                "content": json.loads(parts[3]),
            }
        else:
            msg = json.loads(raw)
        self.received.append(msg)
        return msg

    async def wait_for_output(self, msg_id: str, text: str, timeout: float = 30) -> None:
        """Read messages until a stream output of ``msg_id`` contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.recv(timeout=deadline - time.monotonic())
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "stream"
                and text in msg["content"]["text"]
            ):
                return
        raise AssertionError(f"no output {text!r} for {msg_id}")

    async def wait_idle(self, msg_id: str, timeout: float = 60) -> None:
        """Read messages until the kernel reports idle for ``msg_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.recv(timeout=deadline - time.monotonic())
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return
        raise AssertionError(f"{msg_id} never went idle")

    async def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the kernel answers a kernel_info_request on this socket."""
        msg_id = await self.send("shell", "kernel_info_request", {}, {})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.recv(timeout=deadline - time.monotonic())
            if (
                msg["header"]["msg_type"] == "kernel_info_reply"
                and msg["parent_header"].get("msg_id") == msg_id
            ):
                return
        raise AssertionError("kernel never answered kernel_info")

    def close(self) -> None:
        self.ws.close()


def admin_pre_save_hook(model: dict[str, Any], **kwargs: Any) -> None:
    """An admin's own pre-save hook, to show ours composes with it."""
    if model.get("type") == "notebook":
        model["content"]["metadata"]["admin_hook_ran"] = True


class CountingConnection(ZMQChannelsWebsocketConnection):  # type: ignore[misc]
    """A site-specific websocket connection class, as an admin might configure one."""

    incoming = 0

    def handle_incoming_message(self, incoming_msg: Any) -> None:
        CountingConnection.incoming += 1
        super().handle_incoming_message(incoming_msg)


async def run_and_leave(
    jp_ws_fetch: Any,
    kernel_id: str,
    code: str,
    cell_id: str | None = None,
    *,
    wait_text: str = "start",
    protocol: str = V1,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Run a cell like a tab that goes away once ``wait_text`` is shown; return its msg_id."""
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id, protocol)
    try:
        await client.wait_ready()
        msg_id = await client.execute(code, cell_id=cell_id, metadata=metadata)
        await client.wait_for_output(msg_id, wait_text)
    finally:
        client.close()
    return msg_id


async def run_on_disk_and_leave(
    jp_ws_fetch: Any,
    jp_root_dir: Path,
    notebook_session: Any,
    capture: Any,
    name: str,
    code: str,
) -> None:
    """A one-cell notebook ``name`` (cell ``c``) run by a tab that leaves once ``start``
    shows; returns once the server wrote outputs of it to the file."""
    make_notebook(jp_root_dir / name, [("c", code)])
    _, kernel_id = await notebook_session(name)
    await wait_for(lambda: kernel_id in capture.listener.kernel_ids)
    await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
    await wait_for(lambda: len(read_cells(jp_root_dir / name)["c"]["outputs"]) > 0)


def apply_iopub(store: Any, msg_id: str, msg_type: str, content: dict[str, Any]) -> None:
    """Feed ``store`` one IOPub message of the execution ``msg_id``, no client attached."""
    store.apply(
        {
            "header": {"msg_type": msg_type},
            "parent_header": {"msg_id": msg_id, "msg_type": "execute_request"},
            "content": content,
        },
        detached=True,
    )


#: The tests' folder, the repository, and the recorded IOPub messages the unit tests replay.
# The deprecated synchronous kernel manager (jupyter_server's sessions tests run it).
SYNC_KERNEL_MANAGER = {
    "ServerApp": {
        "jpserver_extensions": {"jupyter_persist": True},
        "kernel_manager_class": "jupyter_server.services.kernels.kernelmanager."
        "MappingKernelManager",
    }
}


TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
RECORDINGS_FILE = TESTS / "data" / "iopub_recordings.json"


def stream_msg(msg_id: str, text: str) -> dict[str, Any]:
    """A ``stream`` IOPub message of the execution ``msg_id``."""
    return {
        "header": {"msg_type": "stream"},
        "parent_header": {"msg_id": msg_id},
        "content": {"name": "stdout", "text": text},
    }


def idle_msg(msg_id: str) -> dict[str, Any]:
    """The ``status: idle`` IOPub message that ends the execution ``msg_id``."""
    return {
        "header": {"msg_type": "status"},
        "parent_header": {"msg_id": msg_id},
        "content": {"execution_state": "idle"},
    }


def placed_run(store: Any, msg_id: str, cell_id: str, path: str = "nb.ipynb") -> Any:
    """A run of ``cell_id`` in ``path`` on kernel ``k``, begun and placed, still running."""
    execution = store.begin("k", msg_id, cell_id=cell_id)
    store.place(execution, path, cell_id)
    return execution


def end_run(store: Any, msg_id: str, text: str) -> None:
    """The run ``msg_id`` prints ``text`` and ends, nobody attached."""
    store.apply(stream_msg(msg_id, text), detached=True)
    store.apply(idle_msg(msg_id), detached=True)
    assert not store.get(msg_id).running


def finished_run(store: Any, msg_id: str, cell_id: str, text: str, path: str = "nb.ipynb") -> Any:
    """A run of ``cell_id`` in ``path`` that printed ``text`` and ended, nobody attached."""
    execution = placed_run(store, msg_id, cell_id, path)
    end_run(store, msg_id, text)
    return execution


async def fetch_json(jp_fetch: Any, *parts: str, **kwargs: Any) -> Any:
    response = await jp_fetch(*parts, **kwargs)
    assert response.code == 200
    return json.loads(response.body)


async def error_code(jp_fetch: Any, *parts: str, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch(*parts, **kwargs)
    response = caught.value.response
    assert response is not None
    return caught.value.code, response.body.decode()


class ReadOnlyAuthorizer(Authorizer):
    """Allows reading, refuses every write (as a hub might for a read-only share)."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return action == "read"


def read_only_server_config() -> dict[str, Any]:
    """A server with the extension whose authorizer allows reading and nothing else."""
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_persist": True},
            "authorizer_class": ReadOnlyAuthorizer,
        },
        "PersistExtension": {"save_interval": 0.5},
    }


def count_notebook_reads(monkeypatch: pytest.MonkeyPatch, contents_manager: Any) -> list[str]:
    """The paths the ContentsManager is asked to read with content, from now on."""
    reads: list[str] = []
    get = contents_manager.get

    async def counting_get(path: str, content: bool = True, **kwargs: Any) -> Any:
        if content:
            reads.append(path)
        return await get(path, content=content, **kwargs)

    monkeypatch.setattr(contents_manager, "get", counting_get)
    return reads


def thread_nice_values(pid: int) -> dict[str, list[int]]:
    """The nice value of each thread of a process, by thread name; "main" for its first."""
    values: dict[str, list[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
        stat = (task / "stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # from the third field, "state", on
        values.setdefault(name, []).append(int(fields[16]))
    return values
