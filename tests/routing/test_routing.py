"""Finding the notebook and cell of an execution: cell ids, the source fallback, renames."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    LEGACY,
    V1,
    load_cells,
    make_notebook,
    read_cells,
    read_notebook,
    run_and_leave,
    stream_text,
    wait_for,
)

SLOW = "import time\nprint('start', flush=True)\ntime.sleep(2)\nprint('end')"


async def start_and_leave(
    jp_ws_fetch: Any, kernel_id: str, code: str, cell_id: str | None, metadata: Any = None
) -> str:
    """The way nbclassic talks to a kernel: the legacy JSON protocol."""
    return await run_and_leave(
        jp_ws_fetch, kernel_id, code, cell_id, protocol=LEGACY, metadata=metadata
    )


@pytest.mark.parametrize(
    ("metadata", "protocol"),
    [
        # nbclassic: the legacy JSON protocol, empty metadata.
        pytest.param({}, LEGACY, id="nbclassic"),
        # VS Code's Jupyter extension on a remote server (@jupyterlab/services, so the
        # v1 protocol): its own cell URI instead of a cellId.
        pytest.param({"vscode": {"cellUri": "vscode-notebook-cell:/x.ipynb#W1"}}, V1, id="vscode"),
    ],
)
async def test_no_cell_id_falls_back_to_the_one_matching_source(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    metadata: Any,
    protocol: str,
) -> None:
    nb_path = jp_root_dir / "fallback.ipynb"
    make_notebook(nb_path, [("other", "print('other')"), ("target", SLOW)])
    _, kernel_id = await notebook_session(nb_path.name)
    await run_and_leave(jp_ws_fetch, kernel_id, SLOW, None, protocol=protocol, metadata=metadata)
    await wait_for(
        lambda: stream_text(read_cells(nb_path)["target"]) == "start\nend\n", what="fallback write"
    )
    assert (await load_cells(nb_path))["other"]["outputs"] == []


async def test_ambiguous_source_keeps_outputs_and_warns(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nb_path = jp_root_dir / "ambiguous.ipynb"
    make_notebook(nb_path, [("one", SLOW), ("two", SLOW)])
    before = nb_path.read_bytes()
    _, kernel_id = await notebook_session(nb_path.name)
    with caplog.at_level(logging.WARNING):
        msg_id = await start_and_leave(jp_ws_fetch, kernel_id, SLOW, None, {})
        await wait_for(
            lambda: (e := capture.store.get(msg_id)) is not None and not e.running,
            what="execution finished",
        )
        await asyncio.sleep(2 * capture.save_interval)
    execution = capture.store.get(msg_id)
    assert execution.unplaced
    assert stream_text({"outputs": execution.area.to_json()}) == "start\nend\n"
    assert nb_path.read_bytes() == before
    assert any(
        "2 cells of ambiguous.ipynb have its source" in r.getMessage() for r in caplog.records
    )
    # The text log is then the one file that holds them.
    log_file = capture.recorder.text_log.file_for("ambiguous.ipynb")
    await wait_for(lambda: log_file.exists() and "end\n" in log_file.read_text())
    text = log_file.read_text()
    assert "no cell (not placed: see the server log) ===\nstart\nend\n" in text


async def test_session_path_change_is_followed(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    old, new = jp_root_dir / "before.ipynb", jp_root_dir / "sub" / "after.ipynb"
    make_notebook(old, [("c", SLOW)])
    session_id, kernel_id = await notebook_session(old.name)
    await start_and_leave(jp_ws_fetch, kernel_id, SLOW, "c")
    # What JupyterLab does on "Rename": move the file, then point the session at it.
    new.parent.mkdir()
    old.rename(new)
    await jp_fetch(
        "api", "sessions", session_id, method="PATCH", body=json.dumps({"path": "sub/after.ipynb"})
    )
    await wait_for(
        lambda: stream_text(read_cells(new)["c"]) == "start\nend\n", what="write at the new path"
    )
    assert not old.exists()


async def test_contents_rename_is_followed(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    old, new = jp_root_dir / "first.ipynb", jp_root_dir / "second.ipynb"
    make_notebook(old, [("c", SLOW)])
    _, kernel_id = await notebook_session(old.name)
    await start_and_leave(jp_ws_fetch, kernel_id, SLOW, "c")
    await jp_fetch("api", "contents", old.name, method="PATCH", body=json.dumps({"path": new.name}))
    await wait_for(
        lambda: stream_text(read_cells(new)["c"]) == "start\nend\n", what="write at the new path"
    )
    assert not old.exists()


async def test_deleted_notebook_is_not_recreated(
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nb_path = jp_root_dir / "doomed.ipynb"
    make_notebook(nb_path, [("c", SLOW)])
    _, kernel_id = await notebook_session(nb_path.name)
    with caplog.at_level(logging.WARNING):
        msg_id = await start_and_leave(jp_ws_fetch, kernel_id, SLOW, "c")
        nb_path.unlink()
        await wait_for(lambda: not capture.store.get(msg_id).running, what="execution finished")
        await asyncio.sleep(2 * capture.save_interval)
    assert not nb_path.exists()
    assert capture.store.get(msg_id).dirty
    assert any("doomed.ipynb does not exist" in r.getMessage() for r in caplog.records)


async def test_corrupt_notebook_is_never_overwritten(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nb_path = jp_root_dir / "corrupt.ipynb"
    make_notebook(nb_path, [("c", SLOW)])
    _, kernel_id = await notebook_session(nb_path.name)
    with caplog.at_level(logging.WARNING):
        msg_id = await start_and_leave(jp_ws_fetch, kernel_id, SLOW, "c")
        nb_path.write_text('{"cells": [ truncated')
        await wait_for(lambda: not capture.store.get(msg_id).running, what="execution finished")
        await asyncio.sleep(2 * capture.save_interval)
    assert nb_path.read_text() == '{"cells": [ truncated'
    assert capture.store.get(msg_id).dirty
    assert any("corrupt.ipynb cannot be read" in r.getMessage() for r in caplog.records)


async def test_deleted_cell_is_kept_and_logged(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nb_path = jp_root_dir / "cell-gone.ipynb"
    make_notebook(nb_path, [("c", SLOW), ("keep", "1")])
    _, kernel_id = await notebook_session(nb_path.name)
    with caplog.at_level(logging.WARNING):
        msg_id = await start_and_leave(jp_ws_fetch, kernel_id, SLOW, "c")
        make_notebook(nb_path, [("keep", "1")])
        before = nb_path.read_bytes()
        await wait_for(lambda: not capture.store.get(msg_id).running, what="execution finished")
        await asyncio.sleep(2 * capture.save_interval)
    assert nb_path.read_bytes() == before
    assert capture.store.get(msg_id).area.to_json()
    assert any("no longer exist" in r.getMessage() for r in caplog.records)


async def test_cell_moved_on_disk_keeps_its_outputs(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    path = jp_root_dir / "moved-cell.ipynb"
    make_notebook(path, [("first", "1"), ("c", SLOW), ("last", "2")])
    _, kernel_id = await notebook_session(path.name)
    await start_and_leave(jp_ws_fetch, kernel_id, SLOW, "c")
    make_notebook(path, [("c", SLOW), ("last", "2"), ("first", "1")])  # the user moved it up
    await wait_for(lambda: stream_text(read_cells(path)["c"]) == "start\nend\n", what="write")
    order = [cell["id"] for cell in read_notebook(path)["cells"]]
    assert order == ["c", "last", "first"]
