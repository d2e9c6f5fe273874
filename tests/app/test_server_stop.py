"""Outputs still unwritten when the server stops are written on the way out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers import LabLikeClient, make_notebook, read_cells, stream_text


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    # A save interval far longer than the test: only the stop can write.
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
        "PersistExtension": {"save_interval": 600},
    }


async def test_stop_writes_what_is_unwritten(
    jp_serverapp: Any, jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "stopping.ipynb"
    code = "import time\nfor i in range(100):\n    print(i, flush=True)\n    time.sleep(0.05)"
    make_notebook(nb_path, [("c", code)])
    _, kernel_id = await notebook_session(nb_path.name)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await client.execute(code, cell_id="c")
    await client.wait_for_output(msg_id, "10")
    # Still attached: nothing may be written while the editor owns the file.
    await asyncio.sleep(0.5)
    assert read_cells(nb_path)["c"]["outputs"] == []
    execution = capture.store.get(msg_id)
    await jp_serverapp.extension_manager.stop_all_extensions()
    client.close()
    written = stream_text(read_cells(nb_path)["c"])
    assert written == execution.area.to_json()[0]["text"]
    assert written.startswith("0\n1\n2\n")
    assert capture.listener.kernel_ids == set()
