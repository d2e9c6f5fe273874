"""End to end through a real jupyter_server and a real ipykernel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    LEGACY,
    V1,
    LabLikeClient,
    load_cells,
    make_notebook,
    read_cells,
    stream_text,
    wait_for,
)

from jupyter_persist.app import PersistExtension
from jupyter_persist.kernels.websocket import CaptureConnectionMixin

PRINT_FOR_3S = (
    "import time\nfor i in range(30):\n    print(f'line {i}', flush=True)\n    time.sleep(0.1)"
)
EXPECTED_3S = "".join(f"line {i}\n" for i in range(30))
PRINT_FOR_6S = PRINT_FOR_3S.replace("range(30)", "range(60)")
EXPECTED_6S = "".join(f"line {i}\n" for i in range(60))


def test_extension_loaded(jp_serverapp: Any, capture: Any) -> None:
    app = jp_serverapp.extension_manager.extension_apps["jupyter_persist"]
    assert any(isinstance(a, PersistExtension) for a in app)
    connection_class = jp_serverapp.web_app.settings["kernel_websocket_connection_class"]
    assert issubclass(connection_class, CaptureConnectionMixin)


@pytest.mark.parametrize("protocol", [V1, LEGACY])
async def test_disconnect_mid_run_writes_complete_output(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any, protocol: str
) -> None:
    nb_path = jp_root_dir / "run.ipynb"
    make_notebook(nb_path, [("cell-a", PRINT_FOR_3S)])
    _, kernel_id = await notebook_session("run.ipynb")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id, protocol)
    await client.wait_ready()
    msg_id = await client.execute(PRINT_FOR_3S, cell_id="cell-a")
    await client.wait_for_output(msg_id, "line 3")
    client.close()

    def complete() -> bool:
        cell = read_cells(nb_path)["cell-a"]
        return stream_text(cell) == EXPECTED_3S

    await wait_for(complete, timeout=30, what="complete output in the file")
    cell = (await load_cells(nb_path))["cell-a"]
    assert cell["execution_count"] == 1
    assert [o["output_type"] for o in cell["outputs"]] == ["stream"]
    assert "".join(cell["source"]) == PRINT_FOR_3S


async def test_no_write_while_attached(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "attached.ipynb"
    make_notebook(nb_path, [("quick", "print('hi')"), ("slow", PRINT_FOR_6S)])
    before = nb_path.read_bytes()
    mtime = nb_path.stat().st_mtime_ns
    _, kernel_id = await notebook_session("attached.ipynb")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    quick = await client.execute("print('hi')", cell_id="quick")
    await client.wait_idle(quick)
    slow = await client.execute(PRINT_FOR_6S, cell_id="slow")
    await client.wait_for_output(slow, "line 5")
    # Several save intervals pass with a client attached: the file is the editor's.
    await asyncio.sleep(4 * capture.save_interval)
    assert nb_path.stat().st_mtime_ns == mtime
    assert nb_path.read_bytes() == before
    client.close()
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["slow"]) == EXPECTED_6S,
        what="the running cell written after the client left",
    )
    # The client never saved the cell that finished while it was attached: written too.
    quick_cell = (await load_cells(nb_path))["quick"]
    assert stream_text(quick_cell) == "hi\n"
    assert quick_cell["execution_count"] == 1


async def save_from_client(jp_fetch: Any, path: str, outputs: list[Any], count: Any) -> None:
    """Save the notebook through the contents API as a browser tab does."""
    response = await jp_fetch("api", "contents", path, params={"content": "1"})
    model = json.loads(response.body)
    for cell in model["content"]["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = outputs
            cell["execution_count"] = count
    body = {"type": "notebook", "format": "json", "content": model["content"]}
    await jp_fetch("api", "contents", path, method="PUT", body=json.dumps(body))


async def run_quick_cell_attached(
    jp_ws_fetch: Any, notebook_session: Any, path: str
) -> LabLikeClient:
    _, kernel_id = await notebook_session(path)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await client.execute("print('hi')", cell_id="quick")
    await client.wait_idle(msg_id)
    return client


async def test_outputs_the_client_saved_are_not_rewritten(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "saved.ipynb"
    make_notebook(nb_path, [("quick", "print('hi')")])
    client = await run_quick_cell_attached(jp_ws_fetch, notebook_session, nb_path.name)
    stream = {"output_type": "stream", "name": "stdout", "text": "hi\n"}
    await save_from_client(jp_fetch, nb_path.name, [stream], 1)
    saved_mtime = nb_path.stat().st_mtime_ns
    client.close()
    await asyncio.sleep(4 * capture.save_interval)
    assert nb_path.stat().st_mtime_ns == saved_mtime


async def test_a_deliberate_clear_stays_cleared(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "cleared.ipynb"
    make_notebook(nb_path, [("quick", "print('hi')")])
    client = await run_quick_cell_attached(jp_ws_fetch, notebook_session, nb_path.name)
    await save_from_client(jp_fetch, nb_path.name, [], None)
    client.close()
    await asyncio.sleep(4 * capture.save_interval)
    cell = (await load_cells(nb_path))["quick"]
    assert cell["outputs"] == []
    assert cell["execution_count"] is None


async def test_client_messages_wait_until_the_capture_receives_the_kernel(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any, monkeypatch: Any
) -> None:
    # A server-side SUB socket connects asynchronously and misses what the kernel
    # publishes before it is connected. So a client's messages are only processed once
    # the capture receives the kernel: here that takes 1.5 s, on purpose.
    nb_path = jp_root_dir / "gate.ipynb"
    make_notebook(nb_path, [("c", "print('first')")])
    _, kernel_id = await notebook_session(nb_path.name)
    loop = asyncio.get_running_loop()
    gate_opened: list[float] = []
    requests_seen: list[float] = []
    real_wait_live = capture.listener.wait_live
    real_on_request = capture.client_events.on_execute_request

    async def slow_wait_live(kernel: str, timeout: float) -> bool:
        await asyncio.sleep(1.5)
        gate_opened.append(loop.time())
        return bool(await real_wait_live(kernel, timeout))

    def spy_on_request(kernel: str, request: Any) -> None:
        requests_seen.append(loop.time())
        real_on_request(kernel, request)

    monkeypatch.setattr(capture.listener, "wait_live", slow_wait_live)
    monkeypatch.setattr(capture.client_events, "on_execute_request", spy_on_request)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    msg_id = await client.execute("print('first')", cell_id="c")
    await client.wait_idle(msg_id)
    client.close()
    assert gate_opened, "the connection did not wait for the capture"
    assert requests_seen, "the execute request was not seen"
    assert requests_seen[0] >= gate_opened[0]
    await wait_for(lambda: stream_text(read_cells(nb_path)["c"]) == "first\n", what="output")
