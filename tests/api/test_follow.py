"""Following a notebook's captured outputs: ``/api/persist/follow`` and ``/api/persist/outputs``.

The pure view (what a follow socket sends) on a store fed real message shapes, then a
real server, a real kernel and a client that runs a cell and leaves, as in the page
reopened mid-run that the frontend extension serves.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    apply_iopub,
    make_notebook,
    read_cells,
    run_and_leave,
    stream_text,
    wait_for,
)
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_persist.api.follow import FollowView
from jupyter_persist.model.store import CaptureStore
from jupyter_persist.storage.journal import apply_diff

PRINTER = (
    "import time\nprint('start', flush=True)\n"
    "for i in range(12):\n    print(i, flush=True)\n    time.sleep(0.25)\nprint('DONE')"
)
PRINTER_TEXT = "start\n" + "".join(f"{i}\n" for i in range(12)) + "DONE\n"


def start(store: CaptureStore, msg_id: str, cell_id: str = "c", path: str = "nb.ipynb") -> None:
    execution = store.begin("k", msg_id, cell_id=cell_id, code="x")
    execution.client_session = "tab-1"
    store.place(execution, path, cell_id)
    apply_iopub(store, msg_id, "status", {"execution_state": "busy"})
    apply_iopub(store, msg_id, "execute_input", {"code": "x", "execution_count": 3})


def out(store: CaptureStore, msg_id: str, text: str) -> None:
    apply_iopub(store, msg_id, "stream", {"name": "stdout", "text": text})


class Page:
    """Folds follow messages the way the frontend extension does (by cell id)."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []

    def take(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)
        for cell_id in msg.get("gone", []):
            self.cells.pop(cell_id, None)
        for change in msg["executions"]:
            cell = self.cells.get(change["cell_id"])
            old = cell["outputs"] if cell and cell["msg_id"] == change["msg_id"] else []
            outputs = apply_diff(old, change["keep"], change["keep_text"], change["tail"])
            self.cells[change["cell_id"]] = {**change, "outputs": outputs}


def test_snapshot_then_only_what_changed() -> None:
    store = CaptureStore()
    view = FollowView(store, "nb.ipynb")
    page = Page()
    snapshot = view.next_message()
    assert snapshot == {"type": "snapshot", "collaborative": False, "executions": []}

    start(store, "m1")
    out(store, "m1", "0\n")
    start(store, "m2", "other", path="another.ipynb")  # another notebook: not sent
    update = view.next_message()
    assert update is not None
    page.take(update)
    [change] = update["executions"]
    assert change["msg_id"] == "m1"
    assert change["client_session"] == "tab-1"
    assert change["execution_count"] == 3
    assert change["running"]
    assert view.next_message() is None  # nothing changed

    out(store, "m1", "1\n")
    update = view.next_message()
    assert update is not None
    [change] = update["executions"]
    assert (change["keep"], change["keep_text"]) == (0, 2)  # only the new text is sent
    assert change["tail"] == [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    page.take(update)
    assert stream_text(page.cells["c"]) == "0\n1\n"

    apply_iopub(store, "m1", "status", {"execution_state": "idle"})
    update = view.next_message()
    assert update is not None
    page.take(update)
    assert not page.cells["c"]["running"]
    assert stream_text(page.cells["c"]) == "0\n1\n"

    # A new run of the cell starts from no outputs.
    start(store, "m3")
    out(store, "m3", "again\n")
    update = view.next_message()
    assert update is not None
    page.take(update)
    assert page.cells["c"]["msg_id"] == "m3"
    assert stream_text(page.cells["c"]) == "again\n"


def test_kept_text_is_counted_as_javascript_counts_it() -> None:
    """Characters beyond the BMP are two UTF-16 code units in the page's strings."""
    store = CaptureStore()
    view = FollowView(store, "nb.ipynb")
    view.next_message()
    start(store, "m1")
    out(store, "m1", "🚀a")
    view.next_message()
    out(store, "m1", "b")
    update = view.next_message()
    assert update is not None
    [change] = update["executions"]
    assert (change["keep"], change["keep_text"]) == (0, 3)
    assert change["tail"][0]["text"] == "b"
    assert not change["written"]


def test_a_snapshot_holds_everything_and_forgotten_cells_are_gone() -> None:
    store = CaptureStore()
    start(store, "m1")
    out(store, "m1", "a\n")
    apply_iopub(store, "m1", "clear_output", {"wait": True})
    out(store, "m1", "b\n")
    view = FollowView(store, "nb.ipynb")
    page = Page()
    snapshot = view.next_message(collaborative=True)
    assert snapshot is not None
    assert snapshot["collaborative"]
    page.take(snapshot)
    assert stream_text(page.cells["c"]) == "b\n"
    execution = store.get("m1")
    assert execution is not None
    store.forget(execution)
    update = view.next_message()
    assert update == {"type": "update", "executions": [], "gone": ["c"]}


async def follow(jp_ws_fetch: Any, path: str) -> Any:
    return await jp_ws_fetch("api", "persist", "follow", params={"path": path})


async def read_json(ws: Any, timeout: float = 30) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.read_message(), timeout)
    assert raw is not None, "the follow socket closed"
    return dict(json.loads(raw))


async def test_a_page_follows_a_run_it_did_not_start(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "live.ipynb"
    make_notebook(nb_path, [("p", PRINTER)])
    _, kernel_id = await notebook_session("live.ipynb")
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, PRINTER, "p", wait_text="0")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: execution.placed)

    ws = await follow(jp_ws_fetch, "live.ipynb")
    page = Page()
    try:
        snapshot = await read_json(ws)
        assert snapshot["type"] == "snapshot"
        assert not snapshot["collaborative"]
        page.take(snapshot)
        assert page.cells["p"]["running"]
        assert stream_text(page.cells["p"]).startswith("start\n0\n")
        assert capture.page_owns("live.ipynb")
        while page.cells["p"]["running"]:
            page.take(await read_json(ws))
            # A page that has not connected to the kernel yet holds the file (it loaded
            # it; a write now would be "File Changed" at its next save).
            assert await capture.flusher.flush("live.ipynb") == "page loading"
        assert stream_text(page.cells["p"]) == PRINTER_TEXT
        assert page.cells["p"]["outputs"] == execution.area.to_json()
        assert len(page.messages) > 3  # it followed, not just one snapshot at the end
        assert stream_text(read_cells(nb_path)["p"]) == ""
    finally:
        ws.close()
    # Once the page has gone, the server writes the file again.
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["p"]) == PRINTER_TEXT,
        timeout=15,
        what="the run written once the page stopped following",
    )
    assert not capture.page_owns("live.ipynb")

    async def described_runs() -> dict[str, Any]:
        response = await jp_fetch("api", "persist", "outputs", params={"path": "live.ipynb"})
        body: dict[str, Any] = json.loads(response.body)
        return body

    # The file is complete while the ContentsManager's save still runs (it reads the
    # model back after writing): the run counts as written once that save returns.
    async def recorded_as_written() -> bool:
        return all(run["written"] for run in (await described_runs())["executions"])

    await wait_for(recorded_as_written, timeout=15, what="the run recorded as written")
    body = await described_runs()
    assert body["path"] == "live.ipynb"
    assert not body["collaborative"]
    [described] = body["executions"]
    assert described["msg_id"] == msg_id
    assert described["cell_id"] == "p"
    assert stream_text(described) == PRINTER_TEXT
    assert described["execution_count"] == 1
    assert not described["running"]
    assert described["written"]
    assert described["client_session"]


async def test_outputs_of_unknown_or_missing_paths(jp_fetch: Any, capture: Any) -> None:
    for params, code in (({"path": "nothing.ipynb"}, 404), ({}, 400), ({"path": "/"}, 400)):
        with pytest.raises(HTTPClientError) as caught:
            await jp_fetch("api", "persist", "outputs", params=params)
        assert caught.value.code == code


async def test_follow_needs_a_path_and_a_token(
    jp_ws_fetch: Any, jp_http_port: int, jp_base_url: str, capture: Any
) -> None:
    with pytest.raises(HTTPClientError) as caught:
        await jp_ws_fetch("api", "persist", "follow")
    assert caught.value.code == 400
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/persist/follow?path=a.ipynb"
    for token in ("", "token wrong"):
        with pytest.raises(HTTPClientError) as caught:
            await websocket_connect(HTTPRequest(url, headers={"Authorization": token}))
        assert caught.value.code in (401, 403)
    # A page that follows a notebook nothing ran in yet gets an empty snapshot.
    ws = await follow(jp_ws_fetch, "a.ipynb")
    try:
        assert (await read_json(ws))["executions"] == []
    finally:
        ws.close()
    await wait_for(lambda: not capture.clients.followed("a.ipynb"), what="unfollowed")


class NoReading(Authorizer):
    """Refuses reading contents (and everything else)."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return False


class TestAuthorization:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {
            "ServerApp": {
                "jpserver_extensions": {"jupyter_persist": True},
                "authorizer_class": NoReading,
            },
        }

    async def test_a_user_who_may_not_read_cannot_follow(
        self, jp_fetch: Any, jp_ws_fetch: Any, capture: Any
    ) -> None:
        with pytest.raises(HTTPClientError) as caught:
            await follow(jp_ws_fetch, "a.ipynb")
        assert caught.value.code == 403
        with pytest.raises(HTTPClientError) as caught:
            await jp_fetch("api", "persist", "outputs", params={"path": "a.ipynb"})
        assert caught.value.code == 403
        assert not capture.clients.followed("a.ipynb")
