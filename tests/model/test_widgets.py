"""The widget model: comm messages in, the notebook's ``metadata.widgets`` state out."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from jupyter_persist.model.widgets import (
    CLOSED_REMEMBERED,
    KernelWidgets,
    WidgetStore,
    notebook_widget_state,
    references,
    view_model_ids,
    widget_state_document,
)

BIG = 1_000_000


def comm(msg_type: str, comm_id: str, buffers: list[bytes] | None = None, **content: Any) -> dict:
    return {
        "header": {"msg_type": msg_type},
        "parent_header": {"msg_id": "exec-1"},
        "content": {"comm_id": comm_id, **content},
        "buffers": buffers or [],
    }


def model_state(name: str, **state: Any) -> dict[str, Any]:
    return {
        "_model_name": name,
        "_model_module": "@jupyter-widgets/controls",
        "_model_module_version": "2.0.0",
        **state,
    }


def opened(comm_id: str, state: dict[str, Any], **data: Any) -> dict:
    return comm(
        "comm_open",
        comm_id,
        target_name="jupyter.widget",
        data={"state": state, "buffer_paths": data.pop("buffer_paths", [])},
        metadata={"version": "2.1.0"},
        **data,
    )


def update(comm_id: str, state: dict[str, Any], method: str = "update", **kw: Any) -> dict:
    return comm(
        "comm_msg",
        comm_id,
        kw.pop("buffers", None),
        data={"method": method, "state": state, "buffer_paths": kw.pop("buffer_paths", [])},
    )


def progress_bar(widgets: KernelWidgets) -> None:
    """tqdm.auto's tree: an HBox of HTML, FloatProgress, HTML, each with layout and style."""
    for name in ("box", "left", "bar", "right"):
        widgets.apply(opened(f"{name}-layout", model_state("LayoutModel")))
    for name in ("left", "bar", "right"):
        widgets.apply(opened(f"{name}-style", model_state("StyleModel")))
    widgets.apply(
        opened(
            "left",
            model_state(
                "HTMLModel", value="", layout="IPY_MODEL_left-layout", style="IPY_MODEL_left-style"
            ),
        )
    )
    widgets.apply(
        opened(
            "bar",
            model_state(
                "FloatProgressModel",
                value=0,
                max=20,
                layout="IPY_MODEL_bar-layout",
                style="IPY_MODEL_bar-style",
            ),
        )
    )
    widgets.apply(
        opened(
            "right",
            model_state(
                "HTMLModel",
                value="",
                layout="IPY_MODEL_right-layout",
                style="IPY_MODEL_right-style",
            ),
        )
    )
    widgets.apply(
        opened(
            "box",
            model_state(
                "HBoxModel",
                children=["IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"],
                layout="IPY_MODEL_box-layout",
            ),
        )
    )


def test_open_update_close() -> None:
    widgets = KernelWidgets()
    assert widgets.apply(opened("a", model_state("IntSliderModel", value=1, max=10)))
    assert widgets.apply(update("a", {"value": 7}))
    assert widgets.models["a"].state["value"] == 7
    assert widgets.models["a"].state["max"] == 10
    assert widgets.apply(update("a", {"value": 8}, method="echo_update"))
    assert widgets.models["a"].state["value"] == 8
    assert widgets.apply(comm("comm_close", "a", data={}))
    assert "a" not in widgets.models
    assert "a" in widgets.closed


def test_messages_that_carry_no_widget_state_change_nothing() -> None:
    widgets = KernelWidgets()
    other = comm("comm_open", "c", target_name="my.target", data={"state": {"x": 1}})
    assert not widgets.apply(other)
    assert not widgets.apply(update("c", {"x": 2}))  # not a widget's comm
    widgets.apply(opened("a", model_state("ButtonModel")))
    custom = comm("comm_msg", "a", data={"method": "custom", "content": {"event": "click"}})
    assert not widgets.apply(custom)
    assert not widgets.apply(comm("comm_close", "unknown", data={}))
    with pytest.raises((KeyError, ValueError, TypeError)):
        widgets.apply({"header": {"msg_type": "comm_msg"}, "content": {}})


def test_binary_buffers_follow_their_paths() -> None:
    widgets = KernelWidgets()
    widgets.apply(
        opened(
            "img",
            model_state("ImageModel", format="png"),
            buffer_paths=[["value"], ["extra", "thumbs", 1]],
            buffers=[b"\x89PNG-one", b"thumb"],
        )
    )
    model = widgets.models["img"]
    assert model.buffers == {("value",): b"\x89PNG-one", ("extra", "thumbs", 1): b"thumb"}
    # A new value replaces the buffer; a key set without a buffer drops the old ones.
    widgets.apply(update("img", {}, buffer_paths=[["value"]], buffers=[b"\x89PNG-two"]))
    widgets.apply(update("img", {"extra": {"thumbs": []}}))
    assert model.buffers == {("value",): b"\x89PNG-two"}
    saved = model.saved()
    assert saved["buffers"] == [
        {"data": base64.b64encode(b"\x89PNG-two").decode(), "encoding": "base64", "path": ["value"]}
    ]
    assert "value" not in saved["state"]


def test_references_at_any_depth() -> None:
    state = {
        "children": ["IPY_MODEL_a", "IPY_MODEL_b"],
        "layout": "IPY_MODEL_c",
        "source": ["IPY_MODEL_d", "value"],
        "nested": {"deep": [{"x": "IPY_MODEL_e"}]},
        "description": "IPY_MODEL is just text here",
    }
    assert sorted(references(state)) == ["a", "b", "c", "d", "e"]


def test_view_ids_in_outputs() -> None:
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": "x"},
        {
            "output_type": "display_data",
            "data": {
                "text/plain": "HBox(...)",
                "application/vnd.jupyter.widget-view+json": {
                    "model_id": "box",
                    "version_major": 2,
                    "version_minor": 0,
                },
            },
            "metadata": {},
        },
        {"output_type": "display_data", "data": {"text/plain": "1"}, "metadata": {}},
    ]
    assert list(view_model_ids(outputs)) == ["box"]


def test_a_notebook_gets_the_models_its_views_reach_and_nothing_else() -> None:
    widgets = KernelWidgets()
    progress_bar(widgets)
    widgets.apply(opened("unrelated", model_state("IntSliderModel")))
    widgets.apply(update("bar", {"value": 20}))
    result = notebook_widget_state(["box"], [widgets], None, BIG)
    assert set(result.state) == {
        "box",
        "box-layout",
        "left",
        "left-layout",
        "left-style",
        "bar",
        "bar-layout",
        "bar-style",
        "right",
        "right-layout",
        "right-style",
    }
    bar = result.state["bar"]
    assert bar["model_name"] == "FloatProgressModel"
    assert bar["model_module"] == "@jupyter-widgets/controls"
    assert bar["model_module_version"] == "2.0.0"
    assert bar["state"]["value"] == 20
    assert bar["state"]["max"] == 20
    assert "buffers" not in bar
    # What is saved is a copy: later updates do not change a notebook already built.
    widgets.apply(update("bar", {"value": 3}))
    assert bar["state"]["value"] == 20
    assert widget_state_document(result.state) == {
        "version_major": 2,
        "version_minor": 0,
        "state": result.state,
    }


def test_closed_models_are_left_out_even_where_the_notebook_had_them() -> None:
    widgets = KernelWidgets()
    progress_bar(widgets)
    saved = {"state": notebook_widget_state(["box"], [widgets], None, BIG).state}
    widgets.apply(comm("comm_close", "right", data={}))
    result = notebook_widget_state(["box"], [widgets], saved, BIG)
    assert "right" not in result.state
    assert "right-layout" not in result.state  # reached only through the closed model
    assert "left" in result.state


def test_models_the_kernel_no_longer_has_keep_what_the_notebook_saved() -> None:
    saved = {
        "state": {
            "old-box": {
                "model_name": "HBoxModel",
                "model_module": "@jupyter-widgets/controls",
                "model_module_version": "2.0.0",
                "state": {"children": ["IPY_MODEL_old-bar"]},
            },
            "old-bar": {"model_name": "FloatProgressModel", "state": {"value": 5}},
            "gone-view": {"model_name": "IntSliderModel", "state": {}},
        }
    }
    widgets = KernelWidgets()
    progress_bar(widgets)
    result = notebook_widget_state(["old-box", "box", "missing"], [widgets], saved, BIG)
    assert {"old-box", "old-bar", "box", "bar"} <= set(result.state)
    assert "gone-view" not in result.state  # no view reaches it any more
    assert "missing" not in result.state


def test_a_model_over_the_size_cap_is_left_out_and_reported() -> None:
    widgets = KernelWidgets()
    widgets.apply(opened("big", model_state("HTMLModel", value="x" * 5000)))
    widgets.apply(opened("small", model_state("HTMLModel", value="y")))
    result = notebook_widget_state(["big", "small"], [widgets], None, 2000)
    assert set(result.state) == {"small"}
    assert [model_id for model_id, _ in result.too_big] == ["big"]
    assert result.too_big[0][1] > 5000


def test_closed_ids_are_remembered_within_a_bound() -> None:
    widgets = KernelWidgets()
    for index in range(CLOSED_REMEMBERED + 5):
        widgets.apply(opened(f"m{index}", model_state("LayoutModel")))
        widgets.apply(comm("comm_close", f"m{index}", data={}))
    assert len(widgets.closed) == CLOSED_REMEMBERED
    assert "m0" not in widgets.closed
    assert not widgets.models


def test_the_store_keeps_models_per_kernel() -> None:
    store = WidgetStore()
    assert not store.apply("k1", update("a", {"value": 1}))  # nothing opened yet
    assert store.apply("k1", opened("a", model_state("IntSliderModel", value=1)))
    assert store.apply("k2", opened("b", model_state("IntSliderModel", value=2)))
    assert len(store) == 2
    assert [set(k.models) for k in store.of(["k1", "k3"])] == [{"a"}]
    store.forget_kernel("k1")
    assert store.of(["k1"]) == []
    assert len(store) == 1


def test_a_restart_drops_the_old_process_models_only() -> None:
    store = WidgetStore()
    store.apply("k", opened("old", model_state("IntSliderModel")))
    stale = store.model_ids("k")
    store.apply("k", opened("new", model_state("IntSliderModel")))  # after the restart
    store.drop("k", stale)
    assert set(store.models_of("k")) == {"new"}
    assert store.model_ids("missing") == set()
    store.drop("missing", {"x"})  # nothing to drop


def test_the_store_knows_which_request_created_each_model() -> None:
    store = WidgetStore()
    store.apply("k", opened("bar", model_state("IntProgressModel", value=0)))
    later = update("bar", {"value": 5})
    later["parent_header"] = {"msg_id": "a-page-kernel-info"}  # a thread, after a page asked
    store.apply("k", later)
    assert store.opener("k", "bar") == "exec-1"
    anonymous = opened("loose", model_state("IntSliderModel"))
    anonymous["parent_header"] = {}
    store.apply("k", anonymous)
    assert store.opener("k", "loose") is None
    assert store.opener("k", "unknown") is None
    assert store.opener("other-kernel", "bar") is None
    store.apply("k", comm("comm_close", "bar", data={}))
    assert store.opener("k", "bar") is None
