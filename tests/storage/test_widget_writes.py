"""The flusher writes widget state with the outputs; a model over the cap is left out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import idle_msg, make_notebook
from jupyter_server.services.contents.filemanager import AsyncFileContentsManager

from jupyter_persist.model.caps import Limits
from jupyter_persist.model.store import CaptureStore
from jupyter_persist.model.widgets import STATE_MIME, VIEW_MIME
from jupyter_persist.storage.flusher import Flusher
from jupyter_persist.storage.writer import NotebookWriter


def opened(comm_id: str, **state: Any) -> dict[str, Any]:
    return {
        "header": {"msg_type": "comm_open"},
        "parent_header": {"msg_id": "m1"},
        "content": {
            "comm_id": comm_id,
            "target_name": "jupyter.widget",
            "data": {"state": {"_model_name": "HTMLModel", **state}, "buffer_paths": []},
        },
        "buffers": [],
    }


def view(model_id: str) -> dict[str, Any]:
    return {
        "header": {"msg_type": "display_data"},
        "parent_header": {"msg_id": "m1"},
        "content": {"data": {VIEW_MIME: {"model_id": model_id}}, "metadata": {}},
    }


async def test_a_widget_over_the_cap_is_left_out_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_notebook(tmp_path / "nb.ipynb", [("a", "show()")])
    store = CaptureStore(Limits(max_rich_output_bytes=2000))
    writer = NotebookWriter(contents_manager=AsyncFileContentsManager(root_dir=str(tmp_path)))
    flusher = Flusher(store, writer, attached=lambda kernel_id: False)
    execution = store.begin("k", "m1", "a")
    store.place(execution, "nb.ipynb", "a")
    store.widgets.apply("k", opened("box", children=["IPY_MODEL_big", "IPY_MODEL_small"]))
    store.widgets.apply("k", opened("big", value="x" * 5000))
    store.widgets.apply("k", opened("small", value="y"))
    store.apply(view("box"), detached=True)
    store.apply(idle_msg("m1"), detached=True)

    with caplog.at_level(logging.WARNING):
        assert await flusher.flush("nb.ipynb") == "written"
        execution.version += 1  # a widget changed: written again, warned once
        await flusher.flush("nb.ipynb")
    saved = json.loads((tmp_path / "nb.ipynb").read_text())["metadata"]["widgets"][STATE_MIME]
    assert set(saved["state"]) == {"box", "small"}
    warnings = [r.getMessage() for r in caplog.records if "widget model" in r.getMessage()]
    assert len(warnings) == 1
    assert "big (" in warnings[0]
    assert "max_rich_output_bytes" in warnings[0]
