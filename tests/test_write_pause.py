"""Pacing of writes: a slow notebook keeps to its share of the time; a round is spread."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from helpers import make_notebook, read_cells, run_and_leave, stream_text, wait_for
from jupyter_server.services.contents.filemanager import AsyncFileContentsManager

from jupyter_persist.flusher import Flusher, pause_after_write
from jupyter_persist.store import CaptureStore
from jupyter_persist.writer import NotebookWriter


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


async def test_the_writes_of_one_round_are_spread_out(tmp_path: Path) -> None:
    """Most of a save runs on the event loop: a round's writes are not made back to back."""
    store = CaptureStore()
    writer = NotebookWriter(contents_manager=AsyncFileContentsManager(root_dir=str(tmp_path)))
    for index in range(4):
        make_notebook(tmp_path / f"n{index}.ipynb", [("a", "print(1)")])
        execution = store.begin("busy" if index == 0 else "k", f"m{index}", cell_id="a")
        store.place(execution, f"n{index}.ipynb", "a")
        store.apply(
            {
                "header": {"msg_type": "stream"},
                "parent_header": {"msg_id": f"m{index}"},
                "content": {"name": "stdout", "text": f"{index}\n"},
            },
            detached=True,
        )
    # The first notebook's kernel has a client attached: not written, and no wait after it.
    flusher = Flusher(store, writer, attached=lambda kernel_id: kernel_id == "busy")
    written: list[float] = []
    merge = writer.merge

    async def timed_merge(path: str, updates: Any) -> Any:
        result = await merge(path, updates)
        written.append(time.monotonic())
        return result

    writer.merge = timed_merge  # type: ignore[method-assign]
    started = time.monotonic()
    await flusher.flush_all(spread=1.2)
    elapsed = time.monotonic() - started
    assert len(written) == 3
    assert all(later - earlier >= 0.29 for earlier, later in pairwise(written))  # 1.2 / 4
    assert elapsed < written[-1] - started + 0.29  # no wait after the last write
    assert [stream_text(read_cells(tmp_path / f"n{i}.ipynb")["a"]) for i in range(4)] == [
        "",
        "1\n",
        "2\n",
        "3\n",
    ]
