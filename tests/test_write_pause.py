"""A notebook whose writes are slow is written less often: writing keeps to its share."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import make_notebook, read_cells, run_and_leave, stream_text, wait_for

from jupyter_persist.flusher import pause_after_write


def test_pause_keeps_writing_to_its_share_of_the_time() -> None:
    assert pause_after_write(1.0, 0.05) == pytest.approx(19.0)
    assert pause_after_write(0.01, 0.5) == pytest.approx(0.01)
    assert pause_after_write(2.0, 1.0) == 0.0
    assert pause_after_write(0.0, 0.05) == 0.0


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    # A tiny share: after its first write the notebook is due again only minutes later.
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
        "PersistExtension": {"save_interval": 0.2, "max_write_share": 0.0001},
    }


async def test_next_write_waits_for_the_pause_then_server_stop_writes_the_rest(
    jp_serverapp: Any, jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "paused.ipynb"
    code = (
        "import time\nprint('start', flush=True)\ntime.sleep(0.5)\n"
        "for i in range(40):\n    print(i, flush=True)\n    time.sleep(0.1)\n"
        "print('DONE', flush=True)"
    )
    make_notebook(nb_path, [("c", code)])
    _, kernel_id = await notebook_session(nb_path.name)
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
    await wait_for(lambda: "start" in stream_text(read_cells(nb_path)["c"]), timeout=30)
    path = nb_path.name
    assert capture.flusher.not_before[path] > time.monotonic() + 1
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.running, timeout=30)
    # Finished, and many save intervals later, the file still holds the first write only.
    await asyncio.sleep(1.0)
    assert "DONE" not in stream_text(read_cells(nb_path)["c"])
    assert execution.dirty
    # The journal does not wait: it has every line.
    capture.recorder.tick()
    assert "DONE" in capture.recorder.journal.file_for(path).read_text()
    # Stopping the server writes what was waiting.
    await jp_serverapp.extension_manager.stop_all_extensions()
    text = stream_text(read_cells(nb_path)["c"])
    assert text.startswith("start\n0\n1\n")
    assert text.endswith("39\nDONE\n")
