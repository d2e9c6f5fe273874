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

from jupyter_persist.model.store import CaptureStore
from jupyter_persist.storage.flusher import Flusher, pause_after_write
from jupyter_persist.storage.journal import fold
from jupyter_persist.storage.writer import NotebookWriter


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


async def test_no_second_write_while_the_cell_runs_then_its_end_is_written_at_once(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
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
    path = nb_path.name
    # The file is on disk a moment before the flusher notes the write's pause.
    await wait_for(lambda: path in capture.flusher.not_before, timeout=30, what="first write")
    assert "start" in stream_text(read_cells(nb_path)["c"])
    paused_until = capture.flusher.not_before[path]
    assert paused_until > time.monotonic() + 1
    first_write = nb_path.read_bytes()
    execution = capture.store.get(msg_id)
    journal = capture.recorder.journal
    journaled_text = ""
    # Without the pause, the file would change at every 0.2 s tick of the 4 s run.
    # (Nothing between the check of `running` and the reads yields to the event loop.)
    while execution.running:
        assert nb_path.read_bytes() == first_write, "written again while the cell ran"
        # The journal does not wait for the pause: it keeps up with the run.
        capture.recorder.tick()
        cells = fold(journal.read(journal.file_for(path)))
        journaled_text = stream_text({"outputs": cells[(path, "c")].outputs})
        await asyncio.sleep(0.1)
    assert "30\n" in journaled_text, "the journal lagged behind the running cell"
    # Once the cell has ended, the pause no longer holds: its final outputs are written.
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["c"]).endswith("39\nDONE\n"),
        timeout=10,
        what="the finished cell's outputs written despite the pause",
    )
    assert time.monotonic() < paused_until, "the pause ran out: the test proves nothing"
    assert stream_text(read_cells(nb_path)["c"]).startswith("start\n0\n1\n")


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

    async def timed_merge(path: str, updates: Any, widgets: Any = None) -> Any:
        result = await merge(path, updates, widgets)
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
