"""The REST API: ``GET /api/persist/status`` and ``POST /api/persist/flush``, on a real server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import (
    LabLikeClient,
    error_code,
    fetch_json,
    make_notebook,
    read_cells,
    read_only_server_config,
    run_and_leave,
    stream_text,
    wait_for,
)
from tornado.web import HTTPError

from jupyter_persist import __version__

SLOW_CELL = "import time\nprint('start', flush=True)\ntime.sleep(3)\nprint('end')"


async def test_status_of_an_idle_server(jp_fetch: Any, capture: Any) -> None:
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    assert status["version"] == __version__
    assert status["notebooks"] == []
    assert status["config"]["save_interval"] == 0.5
    assert status["config"]["replay_buffer_max_bytes"] == 8 * 1024 * 1024
    assert status["journal_dir"].endswith("journals")


async def test_status_follows_a_detached_run(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    make_notebook(jp_root_dir / "run.ipynb", [("slow", SLOW_CELL)])
    _, kernel_id = await notebook_session("run.ipynb")
    await wait_for(lambda: kernel_id in capture.listener.kernel_ids)

    status = await fetch_json(jp_fetch, "api", "persist", "status")
    [notebook] = status["notebooks"]
    assert notebook["path"] == "run.ipynb"
    assert notebook["kernels"][0]["id"] == kernel_id
    assert notebook["executions"] == 0

    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, SLOW_CELL, "slow")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: execution.placed and not capture.clients.any(kernel_id))
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    [notebook] = status["notebooks"]
    assert notebook["running_cells"] == ["slow"]
    [kernel] = notebook["kernels"]
    assert kernel == {"id": kernel_id, "execution_state": "busy", "client_attached": False}
    assert notebook["captured_chars"] == len("start\n")
    assert notebook["journal"] is None or notebook["journal"].startswith(status["journal_dir"])

    await wait_for(lambda: not execution.running and not execution.dirty, timeout=30)
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    [notebook] = status["notebooks"]
    assert notebook["running_cells"] == []
    assert notebook["unwritten_executions"] == 0
    assert notebook["captured_chars"] == len("start\nend\n")
    # The run is over and on disk: only a record of it stays (its outputs are in the file).
    await wait_for(lambda: capture.store.released(msg_id) is not None)
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    [notebook] = status["notebooks"]
    assert notebook["held_bytes"] == 0
    assert notebook["last_write"] is not None
    assert notebook["text_log"] == str(capture.recorder.text_log.file_for("run.ipynb"))
    meter = status["event_loop"]
    assert meter["messages"] >= 6  # statuses, execute_input, two streams
    assert 0 < meter["seconds"]["iopub"] <= meter["seconds_total"]
    assert meter["longest_ms"]["flush"] > 0  # the notebook was written
    assert meter["iopub_us_per_message"] > 0
    reader = status["iopub_reader"]
    assert reader == {"mode": "process", "pid": reader["pid"], "running": True, "errors": 0}
    assert psutil.Process(reader["pid"]).parent().pid == os.getpid()


async def test_flush_writes_at_once(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    make_notebook(jp_root_dir / "now.ipynb", [("c", SLOW_CELL)])
    _, kernel_id = await notebook_session("now.ipynb")
    capture.flusher.not_before["now.ipynb"] = float("inf")  # as if paced by a slow write
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, SLOW_CELL, "c")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: execution.placed)

    reply = await fetch_json(
        jp_fetch, "api", "persist", "flush", method="POST", body=json.dumps({"path": "now.ipynb"})
    )
    assert reply == {"notebooks": {"now.ipynb": "written"}}
    assert stream_text(read_cells(jp_root_dir / "now.ipynb")["c"]) == "start\n"

    reply = await fetch_json(jp_fetch, "api", "persist", "flush", method="POST", body="")
    assert reply["notebooks"] == {}  # nothing new since


async def test_flush_without_a_path_writes_every_notebook(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    # Runs until interrupted: a cell that ended first would be written by the flush loop.
    code = "import time\nprint('start', flush=True)\ntime.sleep(120)"
    executions, kernel_ids = {}, []
    for name in ("one.ipynb", "two.ipynb"):
        make_notebook(jp_root_dir / name, [("c", code)])
        _, kernel_id = await notebook_session(name)
        kernel_ids.append(kernel_id)
        capture.flusher.not_before[name] = float("inf")  # as if paced by a slow write
        executions[name] = capture.store.get(await run_and_leave(jp_ws_fetch, kernel_id, code, "c"))
    await wait_for(lambda: all(e.placed for e in executions.values()))

    reply = await fetch_json(jp_fetch, "api", "persist", "flush", method="POST", body="{}")
    assert reply == {"notebooks": {"one.ipynb": "written", "two.ipynb": "written"}}
    for name in executions:
        assert stream_text(read_cells(jp_root_dir / name)["c"]) == "start\n"
    for kernel_id in kernel_ids:
        await jp_fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")
    await wait_for(lambda: not any(e.running for e in executions.values()))


async def test_flush_leaves_a_notebook_an_open_tab_owns(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    make_notebook(jp_root_dir / "open.ipynb", [("c", "print('hi')")])
    _, kernel_id = await notebook_session("open.ipynb")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    try:
        await client.wait_ready()
        msg_id = await client.execute("print('hi')", cell_id="c")
        await client.wait_idle(msg_id)
        await wait_for(lambda: capture.store.get(msg_id).placed)
        reply = await fetch_json(
            jp_fetch, "api", "persist", "flush", method="POST", body='{"path": "/open.ipynb"}'
        )
        assert reply == {"notebooks": {"open.ipynb": "client attached"}}
        assert read_cells(jp_root_dir / "open.ipynb")["c"]["outputs"] == []
    finally:
        client.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not JSON"),
        ('["a.ipynb"]', "JSON object"),
        ('{"path": 3}', "notebook path"),
        ('{"path": "/"}', "notebook path"),
        ('{"path": "a.ipynb", "force": true}', "unknown field(s): force"),
    ],
)
async def test_flush_refuses_a_malformed_body(
    jp_fetch: Any, capture: Any, body: str, message: str
) -> None:
    code, text = await error_code(jp_fetch, "api", "persist", "flush", method="POST", body=body)
    assert code == 400
    assert message in json.loads(text)["message"]


async def test_flush_of_an_unknown_notebook_is_404(jp_fetch: Any, capture: Any) -> None:
    code, text = await error_code(
        jp_fetch, "api", "persist", "flush", method="POST", body='{"path": "nowhere.ipynb"}'
    )
    assert code == 404
    assert "nowhere.ipynb" in json.loads(text)["message"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_requests_without_a_token_are_refused(
    jp_fetch: Any, capture: Any, method: str
) -> None:
    part = "status" if method == "GET" else "flush"
    body = None if method == "GET" else "{}"
    for token in ("", "token wrong"):
        code, _ = await error_code(
            jp_fetch,
            "api",
            "persist",
            part,
            method=method,
            body=body,
            headers={"Authorization": token},
            follow_redirects=False,
        )
        assert code in (401, 403)


class TestAuthorization:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return read_only_server_config()

    async def test_a_user_who_may_not_write_cannot_flush(self, jp_fetch: Any, capture: Any) -> None:
        assert (await jp_fetch("api", "persist", "status")).code == 200
        code, _ = await error_code(jp_fetch, "api", "persist", "flush", method="POST", body="{}")
        assert code == 403


async def test_status_through_a_kernel_stopping_while_sessions_are_listed(
    jp_fetch: Any, jp_serverapp: Any, capture: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jupyter_server's ``list_sessions`` raises a 404 for a session whose kernel stops
    while it lists (seen in a benchmark); the status lists again."""
    list_sessions = jp_serverapp.session_manager.list_sessions
    calls: list[int] = []

    async def stopping_once() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise HTTPError(404, "Kernel does not exist: 1234")
        return await list_sessions()

    monkeypatch.setattr(jp_serverapp.session_manager, "list_sessions", stopping_once)
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    assert status["notebooks"] == []
    assert len(calls) == 2
