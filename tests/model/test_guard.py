"""The save guard's decisions, one saved cell at a time."""

from __future__ import annotations

from typing import Any

from helpers import idle_msg, stream_msg

from jupyter_persist.model.guard import reconcile_save, reconcile_widget_state
from jupyter_persist.model.reducer import normalized_outputs
from jupyter_persist.model.store import CaptureStore, Execution, Released
from jupyter_persist.model.widgets import (
    STATE_MIME,
    VIEW_MIME,
    KernelWidgets,
    notebook_widget_state,
    widget_digest,
)


def tracked(
    detached: list[str], attached: tuple[str, ...] = (), finished: bool = True
) -> tuple[CaptureStore, Execution]:
    """An execution of cell 'a' of nb.ipynb that printed ``attached`` then ``detached``."""
    store = CaptureStore()
    execution = store.begin("k", "m1")
    store.place(execution, "nb.ipynb", "a")
    store.apply(
        {
            "header": {"msg_type": "execute_input"},
            "parent_header": {"msg_id": "m1"},
            "content": {"code": "", "execution_count": 3},
        },
        detached=False,
    )
    for line in attached:
        store.apply(stream_msg("m1", line), detached=False)
    for line in detached:
        store.apply(stream_msg("m1", line), detached=True)
    if finished:
        store.apply(idle_msg("m1"), detached=bool(detached))
    return store, execution


def cell(outputs: list[Any], count: Any, cell_id: str = "a") -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": cell_id,
        "source": "",
        "outputs": outputs,
        "execution_count": count,
    }


def stream(text: Any) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_a_save_holding_the_outputs_makes_them_clean() -> None:
    store, execution = tracked(["line\n"])
    report = reconcile_save(store, "nb.ipynb", [cell([stream(["line\n"])], 3)])
    assert report.clean == [execution]
    assert execution.dirty  # until the save succeeds
    report.commit()
    assert not execution.dirty


def test_a_running_cell_saved_without_its_count_is_clean() -> None:
    """JupyterLab (and a collaboration room) shows and saves a running cell with no count."""
    store, execution = tracked(["line\n"], finished=False)
    report = reconcile_save(store, "nb.ipynb", [cell([stream("line\n")], None)])
    assert report.clean == [execution]
    store.apply(idle_msg("m1"), detached=True)
    report = reconcile_save(store, "nb.ipynb", [cell([stream("line\n")], None)])
    assert report.restored == [execution]  # once it is over, the count belongs in the file


def test_a_save_commits_the_version_it_saved() -> None:
    store, execution = tracked(["line\n"])
    report = reconcile_save(store, "nb.ipynb", [cell([], None)])
    store.apply(stream_msg("m1", "more\n"), detached=True)  # while the file is written
    report.commit()
    assert execution.dirty


def test_a_gap_save_gets_the_captured_outputs() -> None:
    lines = [f"line {i}\n" for i in range(40)]
    store, execution = tracked(lines[4:], attached=tuple(lines[:4]))
    gap = "".join(lines[:4] + lines[24:])
    saved = cell([stream(gap)], 3)
    report = reconcile_save(store, "nb.ipynb", [saved])
    assert report.restored == [execution]
    assert saved["outputs"] == [stream("".join(lines))]
    assert saved["execution_count"] == 3
    report.commit()
    assert not execution.dirty


def test_a_stale_save_of_a_running_cell_gets_what_was_captured_so_far() -> None:
    store, execution = tracked(["b\n"], attached=("a\n",), finished=False)
    saved = cell([], None)
    report = reconcile_save(store, "nb.ipynb", [saved])
    assert report.restored == [execution]
    assert saved["outputs"] == [stream("a\nb\n")]


def test_a_tab_that_never_had_the_outputs_cannot_clear_unsaved_ones() -> None:
    store, execution = tracked(["x\n"])
    assert execution.dirty  # not on disk yet: the saving tab cannot have seen it
    saved = cell([], None)
    assert reconcile_save(store, "nb.ipynb", [saved]).restored == [execution]
    assert saved["outputs"] == [stream("x\n")]


def test_clearing_complete_outputs_that_were_on_disk_wins() -> None:
    store, execution = tracked(["x\n"])
    execution.written_version = execution.version  # the writer put them on disk
    saved = cell([], None)
    report = reconcile_save(store, "nb.ipynb", [saved])
    assert report.cleared == [execution]
    assert saved["outputs"] == []
    assert execution.area.outputs == ()
    report.commit()
    assert not execution.dirty
    # A later save with the cleared cell stays as it is.
    assert reconcile_save(store, "nb.ipynb", [cell([], None)]).clean == [execution]


def test_a_client_that_saw_everything_has_the_last_word() -> None:
    store, execution = tracked([], attached=("x\n",))
    saved = cell([], None)
    assert reconcile_save(store, "nb.ipynb", [saved]).clean == [execution]
    assert saved["outputs"] == []


def test_a_running_cell_seen_by_its_client_is_left_alone() -> None:
    store, execution = tracked([], attached=("x\n",), finished=False)
    saved = cell([], None)
    report = reconcile_save(store, "nb.ipynb", [saved])
    assert (report.clean, report.restored, report.cleared) == ([], [], [])
    assert execution.dirty


def test_unrelated_and_malformed_cells_are_ignored() -> None:
    store, execution = tracked(["x\n"])
    cells: list[Any] = ["junk", {"cell_type": "markdown", "id": "a"}, cell([], None, "other")]
    report = reconcile_save(store, "nb.ipynb", cells)
    assert (report.clean, report.restored, report.cleared) == ([], [], [])
    assert reconcile_save(store, "elsewhere.ipynb", [cell([], None)]).restored == []
    assert execution.dirty


def test_normalized_outputs() -> None:
    assert normalized_outputs("nope") is None
    assert normalized_outputs([1]) is None
    display = {
        "output_type": "display_data",
        "data": {"text/html": ["<b>", "x</b>"]},
        "metadata": {},
        "transient": {"display_id": "d"},
    }
    assert normalized_outputs([display]) == [
        {"output_type": "display_data", "data": {"text/html": "<b>x</b>"}, "metadata": {}}
    ]


# Widget state: the kernels' models, for views the saving tab has no state of its own for.


def slider_kernel(value: int) -> KernelWidgets:
    widgets = KernelWidgets()
    state = {
        "_model_name": "IntSliderModel",
        "_model_module": "@jupyter-widgets/controls",
        "_model_module_version": "2.0.0",
        "value": value,
        "layout": "IPY_MODEL_lay",
    }
    for comm_id, data in (("lay", {"_model_name": "LayoutModel"}), ("w", state)):
        widgets.apply(
            {
                "header": {"msg_type": "comm_open"},
                "content": {
                    "comm_id": comm_id,
                    "target_name": "jupyter.widget",
                    "data": {"state": data, "buffer_paths": []},
                },
                "buffers": [],
            }
        )
    return widgets


def widget_save(state: dict[str, Any] | None) -> dict[str, Any]:
    view = {
        "output_type": "display_data",
        "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "w"}},
        "metadata": {},
    }
    metadata: dict[str, Any] = {"kernelspec": {"name": "python3"}}
    if state is not None:
        metadata["widgets"] = {
            STATE_MIME: {"version_major": 2, "version_minor": 0, "state": state},
            "other/key": {"kept": True},
        }
    return {"cells": [cell([view], 1)], "metadata": metadata}


def test_a_save_without_widget_state_gets_the_kernels() -> None:
    content = widget_save(None)
    put = reconcile_widget_state(content, [slider_kernel(7)], {}, 1_000_000)
    assert set(put) == {"w", "lay"}
    state = content["metadata"]["widgets"][STATE_MIME]
    assert state["version_major"] == 2
    assert state["state"]["w"]["state"]["value"] == 7
    assert content["metadata"]["kernelspec"] == {"name": "python3"}  # the rest untouched


def test_a_state_the_tab_saved_itself_is_its_last_word() -> None:
    theirs = {"w": {"model_name": "IntSliderModel", "state": {"value": 3}}}
    content = widget_save(theirs)
    put = reconcile_widget_state(content, [slider_kernel(7)], {}, 1_000_000)
    assert set(put) == {"lay"}  # only what it lacked
    saved = content["metadata"]["widgets"]
    assert saved[STATE_MIME]["state"]["w"] == {
        "model_name": "IntSliderModel",
        "state": {"value": 3},
    }
    assert saved["other/key"] == {"kept": True}


def test_a_stale_copy_of_what_we_wrote_gets_the_kernels_current_state() -> None:
    kernel = slider_kernel(2)
    ours_then = notebook_widget_state(["w"], [kernel], None, 1_000_000).state
    written = {model_id: widget_digest(entry) for model_id, entry in ours_then.items()}
    content = widget_save(dict(ours_then))  # the tab carried the file's state along
    kernel.apply(
        {
            "header": {"msg_type": "comm_msg"},
            "content": {"comm_id": "w", "data": {"method": "update", "state": {"value": 9}}},
            "buffers": [],
        }
    )
    put = reconcile_widget_state(content, [kernel], written, 1_000_000)
    assert set(put) == {"w"}  # the layout did not change
    assert content["metadata"]["widgets"][STATE_MIME]["state"]["w"]["state"]["value"] == 9


def test_saves_without_widget_views_or_in_another_format_are_left_alone() -> None:
    content = {"cells": [cell([], None)], "metadata": {}}
    assert reconcile_widget_state(content, [slider_kernel(1)], {}, 1_000_000) == {}
    assert content["metadata"] == {}
    odd = widget_save(None)
    odd["metadata"]["widgets"] = "not a mapping"
    assert reconcile_widget_state(odd, [slider_kernel(1)], {}, 1_000_000) == {}
    assert odd["metadata"]["widgets"] == "not a mapping"
    assert reconcile_widget_state(widget_save(None), [], {}, 1_000_000) == {}


def gone_kernel_run(text: str = "x\n") -> tuple[CaptureStore, Released]:
    """A run no client saw whole, written, whose kernel then stopped."""
    store, execution = tracked([text])
    assert execution.server_owned
    execution.written_version = execution.version
    store.finish_kernel("k")
    store.forget_written("k", release_owned=True)
    record = store.owned_record("nb.ipynb", "a")
    assert record is not None
    return store, record


def test_a_gone_kernels_server_owned_run_leaves_only_a_record() -> None:
    store, record = gone_kernel_run()
    assert len(store) == 0
    assert store.latest("nb.ipynb", "a") is None
    assert (record.msg_id, record.execution_count, record.server_owned) == ("m1", 3, True)


def test_a_server_owned_run_stays_whole_where_the_file_cannot_be_read_back() -> None:
    store, execution = tracked(["x\n"])
    execution.written_version = execution.version
    store.forget_written("k", release_owned=False)
    assert store.get("m1") is execution
    assert store.owned_record("nb.ipynb", "a") is None


def test_a_server_owned_run_showing_a_widget_stays_whole() -> None:
    store, execution = tracked([])
    view = {"model_id": "w1", "version_major": 2, "version_minor": 0}
    store.apply(
        {
            "header": {"msg_type": "display_data"},
            "parent_header": {"msg_id": "m1"},
            "content": {"data": {VIEW_MIME: view, "text/plain": "bar"}, "metadata": {}},
        },
        detached=True,
    )
    execution.written_version = execution.version
    store.forget_written("k", release_owned=True)
    assert store.get("m1") is execution  # the guard takes its models from the kernel's state


def test_a_stale_save_of_a_released_server_owned_run_is_read_back() -> None:
    store, record = gone_kernel_run("line 0\nline 1\n")
    saved = cell([stream("line 0\n")], None)
    report = reconcile_save(store, "nb.ipynb", [saved])
    assert report.read_back == [(saved, record)]
    assert report.cleared_records == []
    # A save of ours never touches the cell: not checked.
    assert reconcile_save(store, "nb.ipynb", [saved], check_records=False).read_back == []


def test_a_save_holding_a_released_server_owned_runs_outputs_is_left_alone() -> None:
    store, _ = gone_kernel_run("line 0\nline 1\n")
    report = reconcile_save(store, "nb.ipynb", [cell([stream(["line 0\n", "line 1\n"])], 3)])
    assert (report.read_back, report.cleared_records, report.clean) == ([], [], [])
    # The same outputs with another count are a stale copy.
    assert len(reconcile_save(store, "nb.ipynb", [cell([stream("line 0\n")], 4)]).read_back) == 1


def test_clearing_a_released_server_owned_run_wins() -> None:
    store, record = gone_kernel_run()
    report = reconcile_save(store, "nb.ipynb", [cell([], None)])
    assert report.cleared_records == [record]
    store.note_cleared(record)
    cleared = store.owned_record("nb.ipynb", "a")
    assert cleared is not None
    assert cleared.execution_count is None
    assert reconcile_save(store, "nb.ipynb", [cell([], None)]).cleared_records == []
    # A stale tab still holding the old outputs gets what the file holds: nothing.
    assert len(reconcile_save(store, "nb.ipynb", [cell([stream("x\n")], 3)]).read_back) == 1
