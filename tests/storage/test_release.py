"""Runs a client saw whole and saved leave memory; a late message brings them back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import LabLikeClient, fetch_json, make_notebook, read_cells, stream_text, wait_for

BIG = "for _ in range(4):\n    print('x' * 99_999, flush=True)"
LATE = (
    "import threading, time\nprint('first', flush=True)\n"
    "def later():\n    time.sleep(4)\n    print('late', flush=True)\n"
    "threading.Thread(target=later).start()"
)


async def save_as_the_tab(jp_fetch: Any, path: str, outputs: dict[str, list[Any]]) -> None:
    """PUT the notebook with the outputs the tab shows, as JupyterLab's save does."""
    response = await jp_fetch("api", "contents", path, params={"content": "1"})
    content = json.loads(response.body)["content"]
    for cell in content["cells"]:
        if cell["id"] in outputs:
            cell["outputs"] = outputs[cell["id"]]
            cell["execution_count"] = 1
    body = {"type": "notebook", "format": "json", "content": content}
    await jp_fetch("api", "contents", path, method="PUT", body=json.dumps(body))


def stream(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


async def run_attached(client: LabLikeClient, code: str, cell_id: str) -> str:
    msg_id = await client.execute(code, cell_id=cell_id)
    await client.wait_idle(msg_id)
    return msg_id


async def test_saved_runs_leave_memory_and_the_status_says_so(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    path = jp_root_dir / "saved.ipynb"
    make_notebook(path, [("a", BIG), ("b", BIG)])
    _, kernel_id = await notebook_session(path.name)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    runs = [await run_attached(client, BIG, cell) for cell in ("a", "b")]
    # The client sees the end before the server handled every message (its reader lags).
    await wait_for(
        lambda: len([e for e in capture.store.latest_of(path.name) if not e.running]) == 2,
        what="both runs placed and handled to their end",
    )
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    (before,) = [n for n in status["notebooks"] if n["path"] == path.name]
    assert before["held_bytes"] >= 800_000
    text = ("x" * 99_999 + "\n") * 4
    await save_as_the_tab(jp_fetch, path.name, {"a": [stream(text)], "b": [stream(text)]})
    await wait_for(lambda: all(capture.store.released(m) for m in runs), what="release")
    assert all(capture.store.get(m) is None for m in runs)
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    (after,) = [n for n in status["notebooks"] if n["path"] == path.name]
    assert after["held_bytes"] == 0
    assert after["released_executions"] == 2
    assert after["captured_chars"] == before["captured_chars"]
    outputs = await fetch_json(jp_fetch, "api", "persist", "outputs", params={"path": path.name})
    assert [e["cell_id"] for e in outputs["executions"]] == ["a", "b"]
    assert all(e["released"] and e["outputs"] == [stream(text)] for e in outputs["executions"])
    client.close()


async def test_late_output_of_a_released_run_joins_its_saved_outputs(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """A thread prints after the cell ended, the tab saved and left: the file gets it."""
    path = jp_root_dir / "late.ipynb"
    make_notebook(path, [("c", LATE)])
    _, kernel_id = await notebook_session(path.name)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await run_attached(client, LATE, "c")
    await save_as_the_tab(jp_fetch, path.name, {"c": [stream("first\n")]})
    await wait_for(lambda: capture.store.released(msg_id) is not None, what="release")
    client.close()
    await wait_for(lambda: stream_text(read_cells(path)["c"]) == "first\nlate\n", what="late")
    # No client saw the late output: the server's run now, let go of again once written.
    await wait_for(lambda: capture.store.get(msg_id) is None, what="released again")
    record = capture.store.released(msg_id)
    assert record is not None
    assert record.server_owned


async def test_late_output_of_a_replaced_run_is_dropped_as_jupyterlab_drops_it(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """JupyterLab disposes a cell's previous future when it runs again: a message of the
    old run shows nowhere. It used to become an execution of its own, never placed and
    never forgotten. (ipykernel gives a thread's late print to the newest run, so the
    message is handed to the router as the kernel listener would.)"""
    path = jp_root_dir / "replaced.ipynb"
    make_notebook(path, [("c", "print('first', flush=True)")])
    _, kernel_id = await notebook_session(path.name)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    first = await run_attached(client, "print('first', flush=True)", "c")
    second = await run_attached(client, "print('second', flush=True)", "c")
    await wait_for(
        lambda: (e := capture.store.latest(path.name, "c")) is not None and not e.running,
        what="the second run placed and handled to its end",
    )
    held = len(capture.store)
    late = {
        "header": {"msg_type": "stream", "msg_id": "late"},
        "parent_header": {"msg_id": first, "msg_type": "execute_request"},
        "content": {"name": "stdout", "text": "late\n"},
    }
    capture.router.on_iopub(kernel_id, late)
    assert capture.store.get(first) is None
    assert len(capture.store) == held
    execution = capture.store.get(second)
    assert execution is not None
    assert execution.area.to_json() == [stream("second\n")]
    client.close()


async def test_a_notebook_nothing_is_held_of_leaves_no_bookkeeping(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """Write pacing, times and locks of a notebook go once its kernel and runs are gone."""
    path = jp_root_dir / "done.ipynb"
    make_notebook(path, [("a", "print('hello')")])
    _, kernel_id = await notebook_session(path.name)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await run_attached(client, "print('hello')", "a")
    # The client sees the end before the server handled every message (its reader lags);
    # leaving before that would leave the run to the server, which keeps a record of it.
    await wait_for(lambda: not capture.store.get(msg_id).running, what="the end handled")
    client.close()  # it saw the run whole but never saved: the server writes it
    await wait_for(lambda: stream_text(read_cells(path)["a"]) == "hello\n", what="our write")
    assert path.name in capture.flusher.paths()
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    await wait_for(lambda: capture.store.get(msg_id) is None, what="the run forgotten")
    await wait_for(lambda: path.name not in capture.flusher.paths(), what="bookkeeping dropped")
    assert path.name not in capture.store.widgets.paths()
    status = await fetch_json(jp_fetch, "api", "persist", "status")
    assert path.name not in [n["path"] for n in status["notebooks"]]
