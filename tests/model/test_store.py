"""The in-memory store: routing by parent msg_id, display ids across cells, ownership."""

from __future__ import annotations

import json
from typing import Any

from helpers import RECORDINGS_FILE, stream_msg

from jupyter_persist.model.store import CaptureStore

RECORDINGS: dict[str, list[dict[str, Any]]] = json.loads(RECORDINGS_FILE.read_text())


def feed(
    store: CaptureStore, kernel_id: str, messages: list[dict[str, Any]], detached: bool = True
) -> None:
    for message in messages:
        store.begin(kernel_id, message["parent_header"]["msg_id"])
        store.apply(message, detached=detached)


def test_update_display_reaches_an_earlier_cell() -> None:
    store = CaptureStore()
    first = store.begin("k", "cell-0", cell_id="a")
    second = store.begin("k", "cell-1", cell_id="b")
    store.place(first, "nb.ipynb", "a")
    store.place(second, "nb.ipynb", "b")
    feed(store, "k", RECORDINGS["display_across_cells"])
    assert first.area.to_json()[0]["data"] == {"text/plain": "'updated'"}
    assert [o["output_type"] for o in second.area.to_json()] == ["stream"]
    assert not first.running
    assert not second.running


def test_display_ids_do_not_cross_kernels() -> None:
    store = CaptureStore()
    messages = RECORDINGS["display_across_cells"]
    feed(store, "k1", [m for m in messages if m["parent_header"]["msg_id"] == "cell-0"])
    other = [
        {**m, "parent_header": {"msg_id": "other-" + m["parent_header"]["msg_id"]}}
        for m in messages
        if m["parent_header"]["msg_id"] == "cell-1"
    ]
    feed(store, "k2", other)
    original = store.get("cell-0")
    assert original is not None
    assert original.area.to_json()[0]["data"] == {"text/plain": "'original'"}


def test_same_display_id_twice_updates_the_first_output() -> None:
    store = CaptureStore()
    feed(store, "k", RECORDINGS["display_same_id_twice"])
    execution = store.get("cell-0")
    assert execution is not None
    texts = [o.get("data", {}).get("text/plain") or o.get("text") for o in execution.area.to_json()]
    # JupyterLab's kernel connection turns the second display into an update of the first.
    assert texts[:3] == ["'two'", "between\n", "'two'"]


def test_new_execution_of_a_cell_replaces_the_old_one() -> None:
    store = CaptureStore()
    old = store.begin("k", "m1", cell_id="c")
    new = store.begin("k", "m2", cell_id="c")
    assert store.place(old, "nb.ipynb", "c")
    assert store.place(new, "nb.ipynb", "c")
    assert store.get("m1") is None
    assert store.get("m2") is new


def test_an_older_execution_never_replaces_a_newer_one() -> None:
    store = CaptureStore()
    old = store.begin("k", "m1", cell_id="c")
    new = store.begin("k", "m2", cell_id="c")
    assert store.place(new, "nb.ipynb", "c")
    assert not store.place(old, "nb.ipynb", "c")
    assert store.get("m1") is None
    assert store.get("m2") is new


def test_changes_are_written_until_saved() -> None:
    store = CaptureStore()
    execution = store.begin("k", "m1")
    store.place(execution, "nb.ipynb", "a")
    store.apply(stream_msg("m1", "x"), detached=False)
    assert store.to_write("nb.ipynb") == [execution]
    assert store.paths_to_write() == {"nb.ipynb"}
    execution.written_version = execution.version
    assert store.paths_to_write() == set()
    store.apply(stream_msg("m1", "y"), detached=True)
    assert execution.server_owned
    assert store.to_write("nb.ipynb") == [execution]


def test_rename_moves_notebooks_and_folders() -> None:
    store = CaptureStore()
    one = store.begin("k", "m1")
    two = store.begin("k", "m2")
    store.place(one, "dir/a.ipynb", "c")
    store.place(two, "other.ipynb", "c")
    assert store.rename("dir", "moved") == [one]
    assert one.path == "moved/a.ipynb"
    assert store.rename("other.ipynb", "renamed.ipynb") == [two]
    assert two.path == "renamed.ipynb"


def test_finish_kernel_stops_running_executions_and_forgets_displays() -> None:
    store = CaptureStore()
    feed(
        store,
        "k",
        [m for m in RECORDINGS["display_across_cells"] if m["parent_header"]["msg_id"] == "cell-0"],
    )
    running = store.begin("k", "m-run")
    assert store.finish_kernel("k") == [running]
    assert not running.running
    update = next(
        m
        for m in RECORDINGS["display_across_cells"]
        if m["header"]["msg_type"] == "update_display_data"
    )
    store.begin("k", "cell-1")
    assert store.apply(update, detached=True) == []


def display(msg_id: str, text: str, display_id: str, update: bool = False) -> dict[str, Any]:
    return {
        "header": {"msg_type": "update_display_data" if update else "display_data"},
        "parent_header": {"msg_id": msg_id},
        "content": {
            "data": {"text/plain": text},
            "metadata": {},
            "transient": {"display_id": display_id},
        },
    }


def test_a_cell_run_all_day_with_a_new_display_each_run_holds_one() -> None:
    """A progress bar per run (a new display id each time): only the latest run's stays."""
    store = CaptureStore()
    for i in range(200):
        msg_id = f"run-{i}"
        store.place(store.begin("k", msg_id), "nb.ipynb", "c")
        store.apply(display(msg_id, "0%", f"bar-{i}"), detached=False)
        store.apply(display(msg_id, "100%", f"bar-{i}", update=True), detached=False)
    assert [e.msg_id for e in store.executions()] == ["run-199"]
    assert store._displays == {("k", "bar-199"): ["run-199"]}
    # An update of a display no execution held adds nothing.
    store.apply(display("run-199", "?", "never-shown", update=True), detached=False)
    assert store._displays == {("k", "bar-199"): ["run-199"]}
    latest = store.get("run-199")
    assert latest is not None
    assert latest.area.to_json()[0]["data"] == {"text/plain": "100%"}
