"""Widget progress bars (tqdm.auto with ipywidgets) kept on the server, end to end."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import (
    LabLikeClient,
    load_cells,
    make_notebook,
    read_notebook,
    run_and_leave,
    wait_for,
)
from nbclient import NotebookClient

from jupyter_persist.model.widgets import STATE_MIME, VIEW_MIME, references

TQDM_LOOP = (
    "import time\n"
    "from tqdm.auto import tqdm\n"
    "print('start', flush=True)\n"
    "for i in tqdm(range(20), desc='Work'):\n"
    "    time.sleep(0.15)\n"
)


def widget_state(notebook: dict[str, Any]) -> dict[str, Any]:
    return notebook.get("metadata", {}).get("widgets", {}).get(STATE_MIME, {}).get("state", {})


def view_ids(cell: dict[str, Any]) -> list[str]:
    return [
        output["data"][VIEW_MIME]["model_id"]
        for output in cell["outputs"]
        if VIEW_MIME in output.get("data", {})
    ]


def canonical(state: dict[str, Any], roots: list[str]) -> dict[str, Any]:
    """The models the roots reach, named by where they are reached: equal up to ids."""
    names: dict[str, str] = {}
    pending = [(root, f"view{index}") for index, root in enumerate(roots)]
    while pending:
        model_id, name = pending.pop(0)
        if model_id in names or model_id not in state:
            continue
        names[model_id] = name
        pending.extend(
            (ref, f"{name}/{position}")
            for position, ref in enumerate(references(state[model_id]["state"]))
        )

    def renamed(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("IPY_MODEL_"):
            return "IPY_MODEL_" + names.get(value[len("IPY_MODEL_") :], "?")
        if isinstance(value, dict):
            return {key: renamed(item) for key, item in value.items()}
        if isinstance(value, list):
            return [renamed(item) for item in value]
        return value

    result = {names[model_id]: renamed(copy.deepcopy(state[model_id])) for model_id in names}
    for entry in result.values():
        value = entry["state"].get("value")
        if isinstance(value, str) and "it/s" in value:
            # tqdm's right-hand text holds the elapsed time and the rate of this run.
            entry["state"]["value"] = re.sub(r"\[.*\]", "[time, rate]", value)
    return result


async def test_a_progress_bar_left_running_is_saved_with_its_widget_state(
    jp_root_dir: Path, jp_ws_fetch: Any, jp_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "bar.ipynb"
    make_notebook(nb_path, [("bar", TQDM_LOOP)])
    _, kernel_id = await notebook_session("bar.ipynb")
    await run_and_leave(jp_ws_fetch, kernel_id, TQDM_LOOP, "bar", wait_text="start")

    def finished_bar() -> bool:
        notebook = read_notebook(nb_path)
        state = widget_state(notebook)
        bars = [m for m in state.values() if m.get("model_name") == "FloatProgressModel"]
        return bool(bars) and bars[0]["state"]["value"] == 20

    await wait_for(finished_bar, timeout=60, what="the finished bar's state in the file")
    # The text log followed the bar as tqdm's own text bar would show it.
    text_log = capture.recorder.text_log.file_for("bar.ipynb")
    await wait_for(
        lambda: "Work: 100%|██████████| 20/20 [" in text_log.read_text(encoding="utf-8"),
        timeout=10,
        what="the finished bar in the text log",
    )
    bar_lines = [
        line for line in text_log.read_text(encoding="utf-8").splitlines() if "/20 [" in line
    ]
    assert len(bar_lines) >= 3, bar_lines  # it moved, line by line, while it ran

    # A stale tab saves the notebook as it had it: the cell's view, no widget state.
    stale = read_notebook(nb_path)
    stale["metadata"].pop("widgets")
    body = {"type": "notebook", "format": "json", "content": stale}
    await jp_fetch("api", "contents", "bar.ipynb", method="PUT", body=json.dumps(body))
    assert finished_bar(), "the save guard kept the kernel's widget state"
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    await wait_for(lambda: kernel_id not in capture.listener.kernel_ids, timeout=30)

    notebook = read_notebook(nb_path)
    cell = (await load_cells(nb_path))["bar"]
    roots = view_ids(cell)
    assert len(roots) == 1
    document = notebook["metadata"]["widgets"][STATE_MIME]
    assert (document["version_major"], document["version_minor"]) == (2, 0)
    state = document["state"]
    # The bar's tree and nothing else: HBox, two HTML texts, the progress, layouts, styles.
    names = sorted(entry["model_name"] for entry in state.values())
    assert names == sorted(
        ["HBoxModel", "HTMLModel", "HTMLModel", "FloatProgressModel"]
        + ["LayoutModel"] * 4
        + ["HTMLStyleModel", "HTMLStyleModel", "ProgressStyleModel"]
    )
    box = state[roots[0]]["state"]
    left, bar, right = (state[ref[len("IPY_MODEL_") :]]["state"] for ref in box["children"])
    assert bar["value"] == bar["max"] == 20
    assert "100%" in left["value"]
    assert "Work" in left["value"]
    assert "20/20" in right["value"]

    # nbclient's store_widget_state on the same notebook: the same models and state.
    reference = nbformat.read(nb_path, as_version=4)
    for nb_cell in reference.cells:
        nb_cell.outputs = []
    reference.metadata.pop("widgets", None)
    await NotebookClient(
        reference, kernel_name="python3", store_widget_state=True, timeout=60
    ).async_execute()
    theirs = json.loads(nbformat.writes(reference))
    their_roots = view_ids(theirs["cells"][0])
    assert canonical(state, roots) == canonical(widget_state(theirs), their_roots)
    assert len(state) == len(widget_state(theirs))


async def ask_widget_states(client: LabLikeClient, timeout: float) -> dict[str, Any] | None:
    """Ask for every widget's state as JupyterLab's widget manager does; the answer or None."""
    control = "control-" + client.session_id
    await client.send(
        "shell",
        "comm_open",
        {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}},
        {"version": "1.0.0"},
    )
    await client.send(
        "shell", "comm_msg", {"comm_id": control, "data": {"method": "request_states"}}, {}
    )
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            msg = await client.recv(timeout=left)
        except asyncio.TimeoutError:
            return None
        content = msg.get("content") or {}
        if content.get("comm_id") == control and content["data"].get("method") == "update_states":
            return dict(content["data"])
    return None


async def test_a_page_asking_a_busy_kernel_for_its_widgets_gets_them_from_the_server(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = TQDM_LOOP.replace("range(20)", "range(40)")
    make_notebook(jp_root_dir / "busy.ipynb", [("bar", code)])
    _, kernel_id = await notebook_session("busy.ipynb")
    await run_and_leave(jp_ws_fetch, kernel_id, code, "bar", wait_text="start")
    await asyncio.sleep(1)  # the loop is under way

    page = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    try:
        # The cell runs for seconds more; the kernel answers only after it.
        answer = await ask_widget_states(page, timeout=3)
        assert answer is not None, "no answer while the kernel is busy"
        bars = [
            s["state"] for s in answer["states"].values() if s["model_name"] == "FloatProgressModel"
        ]
        assert len(bars) == 1
        assert 0 < bars[0]["value"] < 40
        assert answer["buffer_paths"] == []
        bar_id = next(
            i for i, s in answer["states"].items() if s["model_name"] == "FloatProgressModel"
        )
        # From then on the page's models follow the kernel's own updates.
        seen = set()
        while len(seen) < 3:
            msg = await page.recv(timeout=10)
            content = msg.get("content") or {}
            if msg["header"]["msg_type"] == "comm_msg" and content.get("comm_id") == bar_id:
                seen.add(content["data"]["state"].get("value"))
        assert "runs a cell; answered a page's request_states for its 11 widget(s)" in caplog.text
        # The comm info the widget manager asks for next, as the kernel would give it.
        info_id = await page.send(
            "shell", "comm_info_request", {"target_name": "jupyter.widget"}, {}
        )
        while True:
            msg = await page.recv(timeout=5)
            if msg["header"]["msg_type"] == "comm_info_reply":
                break
        assert msg["parent_header"]["msg_id"] == info_id
        assert bar_id in msg["content"]["comms"]
    finally:
        page.close()


async def test_an_idle_kernel_answers_for_its_widgets_itself(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_notebook(jp_root_dir / "idle.ipynb", [("bar", TQDM_LOOP)])
    _, kernel_id = await notebook_session("idle.ipynb")
    page = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    try:
        await page.wait_ready()
        msg_id = await page.execute(TQDM_LOOP.replace("range(20)", "range(2)"), cell_id="bar")
        await page.wait_idle(msg_id)
        answer = await ask_widget_states(page, timeout=10)
        assert answer is not None
        assert any(s["model_name"] == "FloatProgressModel" for s in answer["states"].values())
        assert "answered a page's" not in caplog.text
    finally:
        page.close()


def gated_bar(go_file: Path, close_file: Path) -> str:
    """A bar a thread of the kernel finishes once ``go_file`` exists (the cell has ended),
    and closes once ``close_file`` exists."""
    return (
        "import pathlib, threading, time\n"
        "from ipywidgets import IntProgress\n"
        "bar = IntProgress(max=10)\n"
        "display(bar)\n"
        "def wait(path):\n"
        "    while not pathlib.Path(path).exists():\n"
        "        time.sleep(0.05)\n"
        "def finish():\n"
        f"    wait({str(go_file)!r})\n"
        "    bar.value = 10\n"
        f"    wait({str(close_file)!r})\n"
        "    bar.close()\n"
        "threading.Thread(target=finish).start()\n"
        "print('start', flush=True)\n"
    )


def bar_values(nb_path: Path) -> list[Any]:
    state = widget_state(read_notebook(nb_path))
    return [
        m["state"].get("value") for m in state.values() if m["model_name"] == "IntProgressModel"
    ]


async def test_a_thread_finishing_a_bar_after_another_page_asked_the_kernel_is_saved(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """ipykernel gives a thread's messages the parent of the last shell request, any page's.

    Here a returning page's ``kernel_info_request``: the bar's last update names that
    request, not the cell. The update still belongs to the cell that showed the bar.
    """
    nb_path = jp_root_dir / "gated.ipynb"
    go_file = jp_root_dir / "go"
    close_file = jp_root_dir / "close"
    code = gated_bar(go_file, close_file)
    make_notebook(nb_path, [("bar", code)])
    _, kernel_id = await notebook_session(nb_path.name)
    await run_and_leave(jp_ws_fetch, kernel_id, code, "bar")
    await wait_for(lambda: bar_values(nb_path) == [0], timeout=30, what="the bar at 0 on disk")
    # Nothing of the run waits to be written (its end may come after the bar's first write).
    await wait_for(lambda: not capture.store.paths_to_write(), timeout=30, what="all written")

    page = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    try:
        await page.wait_ready()  # a shell request: the kernel's threads now name it as parent
        go_file.touch()
        while True:
            msg = await page.recv(timeout=10)
            if msg["header"]["msg_type"] == "comm_msg":
                state = msg["content"]["data"].get("state", {})
                if state.get("value") == 10:
                    break
        assert msg["parent_header"]["msg_id"] not in capture.store._executions
    finally:
        page.close()
    await wait_for(lambda: bar_values(nb_path) == [10], timeout=15, what="the bar at 10 on disk")
    # Closed by the thread, with no page attached: the file drops the model.
    close_file.touch()
    await wait_for(lambda: bar_values(nb_path) == [], timeout=15, what="the closed bar gone")


async def test_a_bar_created_by_a_thread_and_shown_by_a_later_cell_is_saved(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """Neither the bar's update nor its creation names a cell: the cell showing it counts."""
    nb_path = jp_root_dir / "shown.ipynb"
    created, go_file = jp_root_dir / "created", jp_root_dir / "go"
    make = (
        "import pathlib, threading, time\n"
        "from ipywidgets import IntProgress\n"
        "def wait(path):\n"
        "    while not pathlib.Path(path).exists():\n"
        "        time.sleep(0.05)\n"
        "def work():\n"
        "    global bar\n"
        f"    wait({str(created)!r})\n"
        "    bar = IntProgress(max=10)\n"
        f"    wait({str(go_file)!r})\n"
        "    bar.value = 10\n"
        "threading.Thread(target=work).start()\n"
    )
    show = "bar"
    make_notebook(nb_path, [("make", make), ("show", show)])
    _, kernel_id = await notebook_session(nb_path.name)
    page = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    try:
        await page.wait_ready()
        await page.wait_idle(await page.execute(make, cell_id="make"))
        await page.wait_ready()  # the thread's widget is created under this request
        created.touch()
        while (await page.recv(timeout=10))["header"]["msg_type"] != "comm_open":
            pass
        msg_id = await page.execute(show, cell_id="show")
        await page.wait_idle(msg_id)
    finally:
        page.close()
    await wait_for(lambda: bar_values(nb_path) == [0], timeout=30, what="the bar at 0 on disk")
    await wait_for(lambda: not capture.store.paths_to_write(), timeout=30, what="all written")

    page = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    try:
        await page.wait_ready()  # the thread's update names this request
        go_file.touch()
        while True:
            msg = await page.recv(timeout=10)
            content = msg.get("content") or {}
            state = (content.get("data") or {}).get("state") or {}
            if msg["header"]["msg_type"] == "comm_msg" and state.get("value"):
                break
    finally:
        page.close()
    await wait_for(lambda: bar_values(nb_path) == [10], timeout=15, what="the bar at 10 on disk")
