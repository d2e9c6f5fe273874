"""The in-memory store: routing by parent msg_id, display ids across cells, ownership."""

from __future__ import annotations

import json
from typing import Any

from helpers import RECORDINGS_FILE, idle_msg, stream_msg

from jupyter_persist.model.store import CaptureStore, outputs_digest

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


def stream_output(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def display_msg(msg_id: str, data: dict[str, Any], display_id: str | None = None) -> Any:
    """A ``display_data`` message of run ``msg_id``, with a display id if given."""
    content: dict[str, Any] = {"data": data, "metadata": {}}
    if display_id is not None:
        content["transient"] = {"display_id": display_id}
    return {
        "header": {"msg_type": "display_data"},
        "parent_header": {"msg_id": msg_id},
        "content": content,
    }


def saved_run(
    store: CaptureStore, msg_id: str, cell_id: str, text: str, detached: bool = False
) -> Any:
    """A run a client saw whole (attached) and saved: finished and on disk.

    ``detached``: a run no client saw whole (the server's), written by the server.
    """
    execution = store.begin("k", msg_id, cell_id=cell_id)
    store.place(execution, "nb.ipynb", cell_id)
    store.apply(stream_msg(msg_id, text), detached=detached)
    store.apply(idle_msg(msg_id), detached=detached)
    execution.written_version = execution.version
    return execution


def test_a_saved_run_is_released_to_a_small_record() -> None:
    store = CaptureStore()
    execution = saved_run(store, "m1", "a", "x" * 400_000)
    assert store.release(execution)
    assert len(store) == 0
    assert store.latest("nb.ipynb", "a") is None
    (record,) = store.released_of("nb.ipynb")
    assert (record.msg_id, record.cell_id, record.seq) == ("m1", "a", execution.seq)
    assert store.released("m1") is record
    assert store.kernels_of("nb.ipynb") == ["k"]


def test_only_what_a_client_saved_whole_and_nothing_else_needs_is_released() -> None:
    store = CaptureStore()
    running = store.begin("k", "run", cell_id="a")
    store.place(running, "nb.ipynb", "a")
    assert not store.release(running)
    unsaved = saved_run(store, "unsaved", "b", "x\n")
    unsaved.version += 1
    assert not store.release(unsaved)
    owned = saved_run(store, "owned", "c", "x\n")
    owned.server_owned = True
    assert not store.release(owned)  # the save guard gives its outputs to stale tabs
    shown = saved_run(store, "display", "d", "x\n")
    store.apply(display_msg("display", {"text/plain": "1"}, "p"), detached=False)
    shown.written_version = shown.version
    assert not store.release(shown)  # an update_display_data may rewrite it
    widget = saved_run(store, "widget", "e", "x\n")
    view = {"model_id": "m", "version_major": 2, "version_minor": 0}
    store.apply(
        display_msg("widget", {"application/vnd.jupyter.widget-view+json": view}), detached=False
    )
    widget.written_version = widget.version
    assert not store.release(widget)  # a thread may still move it: written through this run
    assert len(store) == 5


def test_a_released_run_comes_back_with_the_files_outputs_and_goes_on() -> None:
    store = CaptureStore()
    execution = saved_run(store, "m1", "a", "50%")  # a line not ended: the next text joins it
    record = store.released("m1") if store.release(execution) else None
    assert record is not None
    on_disk = [{"output_type": "stream", "name": "stdout", "text": ["5", "0%"]}]
    revived = store.revive(record, on_disk)
    assert revived is not None
    assert not revived.dirty
    assert revived is store.latest("nb.ipynb", "a")
    store.apply(stream_msg("m1", " done\n"), detached=True)
    assert revived.area.to_json() == [
        {"output_type": "stream", "name": "stdout", "text": "50% done\n"}
    ]
    assert revived.dirty
    assert revived.server_owned
    assert store.released("m1") is None


def test_a_released_run_whose_file_cannot_be_read_keeps_late_output_apart() -> None:
    store = CaptureStore()
    record = store.released("m1") if store.release(saved_run(store, "m1", "a", "x\n")) else None
    assert record is not None
    revived = store.revive(record, None)
    assert revived is not None
    assert revived.unplaced
    assert store.to_write("nb.ipynb") == []  # never written over the cell's saved outputs


def test_a_released_cell_run_again_forgets_the_record_and_drops_late_output() -> None:
    store = CaptureStore()
    first = saved_run(store, "m1", "a", "x\n")
    assert store.release(first)
    record = store.released("m1")
    assert record is not None
    second = store.begin("k", "m2", cell_id="a")
    assert store.place(second, "nb.ipynb", "a")
    assert store.released_of("nb.ipynb") == []
    assert store.was_replaced("m1")
    assert store.revive(record, []) is None  # replaced meanwhile
    third = store.begin("k", "m3", cell_id="a")
    assert store.place(third, "nb.ipynb", "a")
    assert store.was_replaced("m2")


def test_an_older_run_never_replaces_a_newer_released_one() -> None:
    store = CaptureStore()
    older = store.begin("k", "old", cell_id="a")  # began first, located late
    newer = saved_run(store, "new", "a", "x\n")
    assert store.release(newer)
    assert not store.place(older, "nb.ipynb", "a")
    assert store.released("new") is not None


def test_released_runs_follow_a_rename_and_go_with_their_kernel() -> None:
    store = CaptureStore()
    assert store.release(saved_run(store, "m1", "a", "x\n"))
    store.rename("nb.ipynb", "moved.ipynb")
    assert [r.path for r in store.released_runs()] == ["moved.ipynb"]
    store.forget_written("k")
    assert store.released_runs() == []


def test_the_servers_finished_runs_on_disk_are_released_while_the_kernel_lives() -> None:
    store = CaptureStore()
    for index in range(150):  # a day of distinct 400 kB cells, run detached
        saved_run(store, f"m{index}", f"c{index}", "x" * 400_000, detached=True)
    assert store.release_written("nb.ipynb") == 150
    assert len(store) == 0
    records = store.released_of("nb.ipynb")
    assert len(records) == 150
    assert all(record.server_owned for record in records)
    # The save guard still protects them: it finds each as the cell's server-owned run.
    record = store.owned_record("nb.ipynb", "c7")
    assert record is not None
    assert record.msg_id == "m7"
    # A late message brings the outputs back from the file, still the server's to save.
    revived = store.revive(record, [stream_output("x" * 400_000)])
    assert revived is not None
    assert revived.server_owned
    assert not revived.dirty


def test_only_the_servers_finished_written_runs_without_displays_are_released() -> None:
    store = CaptureStore()
    running = store.begin("k", "running", cell_id="a")
    store.place(running, "nb.ipynb", "a")
    store.apply(stream_msg("running", "x\n"), detached=True)
    running.written_version = running.version
    unwritten = saved_run(store, "unwritten", "b", "x\n", detached=True)
    unwritten.version += 1
    clients = saved_run(store, "client", "c", "x\n")  # the client's save wins: not ours
    in_room = saved_run(store, "room", "d", "x\n", detached=True)
    in_room.room_written = (lambda: None, in_room.version)  # type: ignore[assignment]
    shown = store.begin("k", "display", cell_id="e")
    store.place(shown, "nb.ipynb", "e")
    store.apply(display_msg("display", {"text/plain": "1"}, "p"), detached=True)
    store.apply(idle_msg("display"), detached=True)
    shown.written_version = shown.version
    widget = store.begin("k", "widget", cell_id="f")
    store.place(widget, "nb.ipynb", "f")
    view = {"model_id": "m", "version_major": 2, "version_minor": 0}
    store.apply(
        display_msg("widget", {"application/vnd.jupyter.widget-view+json": view}), detached=True
    )
    store.apply(idle_msg("widget"), detached=True)
    widget.written_version = widget.version
    assert clients.written_version == clients.version
    assert store.release_written("nb.ipynb") == 0
    assert len(store) == 6
    assert store.release_written("other.ipynb") == 0


def test_one_run_per_notebook_showing_a_kernels_widgets() -> None:
    store = CaptureStore()
    view = {"model_id": "m", "version_major": 2, "version_minor": 0}
    shown = []
    for msg_id, path, cell_id, kernel_id in [
        ("w1", "nb.ipynb", "a", "k"),
        ("w2", "nb.ipynb", "b", "k"),
        ("w3", "other.ipynb", "a", "k"),
        ("w4", "third.ipynb", "a", "k2"),
    ]:
        execution = store.begin(kernel_id, msg_id, cell_id=cell_id)
        store.place(execution, path, cell_id)
        store.apply(
            display_msg(msg_id, {"application/vnd.jupyter.widget-view+json": view}), detached=True
        )
        shown.append(execution)
    plain = store.begin("k", "plain", cell_id="c")
    store.place(plain, "fourth.ipynb", "c")
    store.apply(stream_msg("plain", "x\n"), detached=True)
    assert store.showing_widgets("k") == [shown[0], shown[2]]
    assert store.showing_widgets("k2") == [shown[3]]
    assert store.showing_widgets("k3") == []
    # A change no cell's run made: those notebooks have news, once, when next asked.
    for execution in [*shown, plain]:
        execution.written_version = execution.version
    store.widgets_changed("k")
    store.widgets_changed("k")
    assert store.paths_to_write() == {"nb.ipynb", "other.ipynb"}
    assert [e.version - e.written_version for e in shown] == [1, 0, 1, 0]
    assert store.paths_to_write() == {"nb.ipynb", "other.ipynb"}  # not marked again
    assert [e.version - e.written_version for e in shown] == [1, 0, 1, 0]


def test_the_outputs_digest_tells_outputs_apart_as_json_does() -> None:
    text = stream_output("a\n")
    digest = outputs_digest([text])
    # Read back from a file: the same JSON, keys in another order, lists not tuples.
    assert outputs_digest(json.loads(json.dumps([dict(reversed(list(text.items())))]))) == digest
    assert outputs_digest([{**text, "outputs": (1, 2)}]) == outputs_digest(
        [{**text, "outputs": [1, 2]}]
    )
    others = [
        [],
        [text, text],
        [stream_output("a\n\n")],
        [{**text, "text": "a"}],
        [{**text, "name": "stderr"}],
        [{"output_type": "stream", "name": "stdout", "text": ["a\n"]}],
        [{"output_type": "execute_result", "execution_count": 1, "data": {}, "metadata": {}}],
        [{"output_type": "execute_result", "execution_count": 1.0, "data": {}, "metadata": {}}],
        [{"output_type": "execute_result", "execution_count": "1", "data": {}, "metadata": {}}],
        [{"output_type": "execute_result", "execution_count": None, "data": {}, "metadata": {}}],
        # Strings that would run together without their lengths.
        [{**text, "text": ["as", "b"]}],
        [{**text, "text": ["a", "sb"]}],
        [{**text, "text": "\ud800"}],  # a lone surrogate, as JSON may carry one
    ]
    digests = [outputs_digest(outputs) for outputs in others]
    assert digest not in digests
    assert len(set(digests)) == len(digests)
