"""Saves from stale tabs, through the contents REST API of a real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    LabLikeClient,
    load_cells,
    make_notebook,
    read_cells,
    run_and_leave,
    stream_text,
    wait_for,
)

LINES = 40
CODE = (
    f"import time\nfor i in range({LINES}):\n    print(f'line {{i}}', flush=True)\n"
    "    time.sleep(0.05)"
)
ALL = "".join(f"line {i}\n" for i in range(LINES))


async def run_detached(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, name: str
) -> tuple[Path, str]:
    nb_path = jp_root_dir / name
    make_notebook(nb_path, [("c", CODE)])
    _, kernel_id = await notebook_session(nb_path.name)
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, CODE, "c", wait_text="line 3")
    return nb_path, msg_id


async def put_cell(jp_fetch: Any, path: str, outputs: list[Any], count: Any) -> None:
    """Save the notebook as a tab holding ``outputs`` for the cell would."""
    response = await jp_fetch("api", "contents", path, params={"content": "1"})
    content = json.loads(response.body)["content"]
    content["cells"][0]["outputs"] = outputs
    content["cells"][0]["execution_count"] = count
    body = {"type": "notebook", "format": "json", "content": content}
    await jp_fetch("api", "contents", path, method="PUT", body=json.dumps(body))


def stream(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


async def test_stale_save_keeps_the_captured_outputs(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path, _ = await run_detached(jp_root_dir, jp_ws_fetch, notebook_session, "stale.ipynb")
    await wait_for(lambda: stream_text(read_cells(nb_path)["c"]) == ALL, what="complete write")
    # The tab went offline after line 3 and saves what it had.
    await put_cell(jp_fetch, nb_path.name, [stream("line 0\nline 1\nline 2\nline 3\n")], None)
    cell = (await load_cells(nb_path))["c"]
    assert stream_text(cell) == ALL
    assert cell["execution_count"] == 1


async def test_gap_save_keeps_every_output_exactly_once(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path, _ = await run_detached(jp_root_dir, jp_ws_fetch, notebook_session, "gap.ipynb")
    await wait_for(lambda: stream_text(read_cells(nb_path)["c"]) == ALL, what="complete write")
    gap = "".join(f"line {i}\n" for i in [*range(4), *range(24, LINES)])
    await put_cell(jp_fetch, nb_path.name, [stream(gap)], 1)
    assert stream_text((await load_cells(nb_path))["c"]) == ALL


async def test_deliberate_clear_stays_cleared(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path, msg_id = await run_detached(jp_root_dir, jp_ws_fetch, notebook_session, "clear.ipynb")
    execution = capture.store.get(msg_id)
    # The last line can be on disk before the run's end is: a clear then still meets a
    # running cell, whose outputs the guard keeps (see the next test).
    await wait_for(
        lambda: (
            not execution.running
            and not execution.dirty
            and stream_text(read_cells(nb_path)["c"]) == ALL
        ),
        what="the ended run written",
    )
    # The user reopens the notebook, sees everything, and clears the outputs.
    await put_cell(jp_fetch, nb_path.name, [], None)
    await asyncio.sleep(3 * capture.save_interval)
    cell = (await load_cells(nb_path))["c"]
    assert cell["outputs"] == []
    assert cell["execution_count"] is None


async def test_reopened_tab_saving_while_the_cell_runs(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path, msg_id = await run_detached(jp_root_dir, jp_ws_fetch, notebook_session, "reopen.ipynb")
    # A tab reopened before the first write loaded the cell empty, and saves it so.
    await put_cell(jp_fetch, nb_path.name, [], None)
    execution = capture.store.get(msg_id)
    assert execution.running
    assert "line 3" in stream_text(read_cells(nb_path)["c"])
    await wait_for(lambda: stream_text(read_cells(nb_path)["c"]) == ALL, what="the rest written")


async def test_a_run_whose_page_left_is_kept_from_another_pages_save(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """The page that ran the cell leaves; another page, attached all along, saves without it.

    JupyterLab shows a run only in the page that started it: the other page's copy of
    the cell is empty, and its save must not count as the user's last word.
    """
    nb_path = jp_root_dir / "two_pages.ipynb"
    make_notebook(nb_path, [("c", CODE)])
    _, kernel_id = await notebook_session(nb_path.name)
    other = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    try:
        await other.wait_ready()
        msg_id = await run_and_leave(jp_ws_fetch, kernel_id, CODE, "c", wait_text="line 3")
        execution = capture.store.get(msg_id)
        await wait_for(lambda: not execution.running, what="the end of the run")
        assert capture.clients.any(kernel_id)
        assert execution.server_owned
        await put_cell(jp_fetch, nb_path.name, [], None)
        cell = (await load_cells(nb_path))["c"]
        assert stream_text(cell) == ALL
        assert cell["execution_count"] == 1
    finally:
        other.close()


@pytest.mark.parametrize("kernel", ["alive", "stopped"])
async def test_a_stale_save_of_a_released_run_gets_the_outputs_from_the_file(
    kernel: str,
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: Any,
) -> None:
    """Once the server's run is over and on disk, only a record of it stays, whether its
    kernel lives on or not; the file holds the outputs."""
    nb_path, msg_id = await run_detached(jp_root_dir, jp_ws_fetch, notebook_session, "gone.ipynb")
    await wait_for(lambda: stream_text(read_cells(nb_path)["c"]) == ALL, what="complete write")
    await wait_for(lambda: capture.store.get(msg_id) is None, what="the run released")
    record = capture.store.owned_record(nb_path.name, "c")
    assert record is not None
    assert record.msg_id == msg_id
    kernel_id = record.kernel_id
    if kernel == "stopped":
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        await wait_for(lambda: kernel_id not in capture.listener.kernel_ids, what="untracked")
        assert capture.store.owned_record(nb_path.name, "c") is record
    assert not [e for e in capture.store.executions() if e.kernel_id == kernel_id]

    # The tab that went offline after line 3 saves what it had: the file's outputs win.
    await put_cell(jp_fetch, nb_path.name, [stream("line 0\nline 1\nline 2\nline 3\n")], None)
    cell = (await load_cells(nb_path))["c"]
    assert stream_text(cell) == ALL
    assert cell["execution_count"] == 1

    # The user clears them: they stay cleared, even against that stale tab's next save.
    await put_cell(jp_fetch, nb_path.name, [], None)
    await put_cell(jp_fetch, nb_path.name, [stream("line 0\n")], 1)
    cell = (await load_cells(nb_path))["c"]
    assert (cell["outputs"], cell["execution_count"]) == ([], None)

    # Outputs changed outside Jupyter cannot be vouched for: a save keeps its own.
    on_disk = json.loads(nb_path.read_text())
    on_disk["cells"][0]["outputs"] = [stream("edited\n")]
    nb_path.write_text(json.dumps(on_disk))
    await put_cell(jp_fetch, nb_path.name, [stream("line 0\n")], 1)
    assert stream_text((await load_cells(nb_path))["c"]) == "line 0\n"
    assert "are no longer in the file" in caplog.text
