"""Merging outputs into real notebook files through a real ContentsManager."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import (
    count_notebook_reads,
    end_run,
    finished_run,
    make_notebook,
    placed_run,
    read_cells,
    run_and_leave,
    stream_text,
    wait_for,
)
from jupyter_server.services.contents.filemanager import AsyncFileContentsManager
from nbformat.sign import NotebookNotary

from jupyter_persist.model.store import CaptureStore
from jupyter_persist.model.widgets import STATE_MIME, NotebookWidgets
from jupyter_persist.storage import flusher as flusher_module
from jupyter_persist.storage import writer as writer_module
from jupyter_persist.storage.flusher import Flusher
from jupyter_persist.storage.writer import (
    CellUpdate,
    NotebookUnavailable,
    NotebookWriter,
    merge_widget_state,
)

STREAM = {"output_type": "stream", "name": "stdout", "text": "hello\n"}


@pytest.fixture
def writer(tmp_path: Path) -> NotebookWriter:
    return NotebookWriter(contents_manager=AsyncFileContentsManager(root_dir=str(tmp_path)))


def without_outputs(data: dict) -> dict:
    data = json.loads(json.dumps(data))
    for cell in data["cells"]:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
    return data


async def test_merge_changes_only_outputs_and_count(tmp_path: Path, writer: NotebookWriter) -> None:
    path = tmp_path / "nb.ipynb"
    nb = make_notebook(
        path,
        [("a", "print('hello')"), ("b", "x = 1\ny = 2"), ("c", "# untouched")],
        kernelspec={"name": "python3", "display_name": "Python 3"},
        custom={"keep": [1, 2, 3]},
    )
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("# Title", id="md"))
    nb.cells[2].metadata["tags"] = ["keep-me"]
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="old\n")]
    nb.cells[3].execution_count = 3
    nbformat.write(nb, str(path))
    before = json.loads(path.read_text())

    result = await writer.merge(path.name, {"a": CellUpdate([STREAM], 4)})

    assert result.saved
    assert result.merged == {"a"}
    after = json.loads(path.read_text())
    assert without_outputs(after) == without_outputs(before)
    cells = {cell["id"]: cell for cell in after["cells"]}
    assert cells["a"]["outputs"] == [{**STREAM, "text": ["hello\n"]}]
    assert cells["a"]["execution_count"] == 4
    assert cells["c"]["outputs"] == before["cells"][3]["outputs"]
    # Byte for byte: the file equals what nbformat writes for the expected notebook.
    nb.cells[0].outputs = [nbformat.from_dict(STREAM)]
    nb.cells[0].execution_count = 4
    assert path.read_text() == nbformat.writes(nb) + "\n"


async def test_equal_outputs_are_not_rewritten(tmp_path: Path, writer: NotebookWriter) -> None:
    path = tmp_path / "nb.ipynb"
    make_notebook(path, [("a", "print('hello')")])
    await writer.merge(path.name, {"a": CellUpdate([STREAM], 1)})
    mtime = path.stat().st_mtime_ns
    result = await writer.merge(path.name, {"a": CellUpdate([STREAM], 1)})
    assert not result.saved
    assert result.merged == {"a"}
    assert path.stat().st_mtime_ns == mtime


async def test_the_contents_managers_loop_time_is_counted_apart(
    tmp_path: Path, writer: NotebookWriter
) -> None:
    make_notebook(tmp_path / "nb.ipynb", [("a", "print('hello')")])
    await writer.merge("nb.ipynb", {"a": CellUpdate([STREAM], 1)})
    assert writer.meter.seconds["contents_manager"] > 0  # its get and save
    assert writer.meter.longest["contents_manager"] > 0


async def test_missing_cell_is_reported_not_written(tmp_path: Path, writer: NotebookWriter) -> None:
    path = tmp_path / "nb.ipynb"
    make_notebook(path, [("a", "1")])
    before = path.read_bytes()
    result = await writer.merge(path.name, {"gone": CellUpdate([STREAM], 1)})
    assert result.missing == {"gone"}
    assert not result.saved
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [
        "{ not json",
        "",
        json.dumps({"cells": "nope", "nbformat": 4, "nbformat_minor": 5, "metadata": {}}),
        json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}),
    ],
)
async def test_unusable_notebook_is_never_overwritten(
    tmp_path: Path, writer: NotebookWriter, content: str
) -> None:
    path = tmp_path / "bad.ipynb"
    path.write_text(content)
    with pytest.raises(NotebookUnavailable):
        await writer.merge(path.name, {"a": CellUpdate([STREAM], 1)})
    assert path.read_text() == content


async def test_deleted_notebook_is_not_recreated(tmp_path: Path, writer: NotebookWriter) -> None:
    with pytest.raises(NotebookUnavailable, match="does not exist"):
        await writer.merge("gone.ipynb", {"a": CellUpdate([STREAM], 1)})
    assert not (tmp_path / "gone.ipynb").exists()


async def test_find_cell_by_source(tmp_path: Path, writer: NotebookWriter) -> None:
    path = tmp_path / "nb.ipynb"
    make_notebook(path, [("a", "print(1)"), ("b", "print(2)"), ("c", "print(2)")])
    assert await writer.find_cell_by_source(path.name, "print(1)") == ("a", 1)
    assert await writer.find_cell_by_source(path.name, "print(2)") == (None, 2)
    assert await writer.find_cell_by_source(path.name, "print(3)") == (None, 0)


async def test_cells_without_ids_are_matched_by_source(
    tmp_path: Path, writer: NotebookWriter
) -> None:
    path = tmp_path / "old.ipynb"
    nb = nbformat.v4.new_notebook(nbformat_minor=4)
    nb.cells = [nbformat.v4.new_code_cell("print('a')"), nbformat.v4.new_code_cell("print('b')")]
    for cell in nb.cells:
        del cell["id"]
    path.write_text(nbformat.writes(nb, version=4))
    result = await writer.merge(
        path.name, {"lab-generated-id": CellUpdate([STREAM], 2, "print('b')")}
    )
    assert result.merged == {"lab-generated-id"}
    saved = json.loads(path.read_text())
    assert saved["nbformat_minor"] == 4
    assert all("id" not in cell for cell in saved["cells"])
    assert saved["cells"][1]["outputs"] == [{**STREAM, "text": ["hello\n"]}]
    assert saved["cells"][0]["outputs"] == []


async def test_ten_thousand_cells(tmp_path: Path, writer: NotebookWriter) -> None:
    path = tmp_path / "big.ipynb"
    make_notebook(path, [(f"c{i}", f"x = {i}") for i in range(10_000)])
    updates = {f"c{i}": CellUpdate([STREAM], i) for i in range(0, 10_000, 100)}
    result = await writer.merge(path.name, updates)
    assert result.merged == set(updates)
    cells = json.loads(path.read_text())["cells"]
    assert len(cells) == 10_000
    assert cells[500]["execution_count"] == 500
    assert cells[501]["outputs"] == []


async def test_a_notebook_we_wrote_is_not_read_again_unless_changed(
    tmp_path: Path, writer: NotebookWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read is a trust check and a validation on the event loop: not once per write."""
    path = tmp_path / "kept.ipynb"
    make_notebook(path, [("a", "print(1)"), ("b", "print(2)")])
    first = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    reads = count_notebook_reads(monkeypatch, writer.contents_manager)
    await writer.merge("kept.ipynb", {"a": CellUpdate(first, 1)})
    small = [{"output_type": "stream", "name": "stdout", "text": "2\n"}]
    await writer.merge("kept.ipynb", {"b": CellUpdate(small, 2)})
    assert len(reads) == 1  # the second write used the notebook as saved
    # Someone else changes the file (a user's edit): the next write reads it again.
    on_disk = json.loads(path.read_text())
    on_disk["cells"][1]["source"] = "print('edited')"
    path.write_text(json.dumps(on_disk))
    await writer.merge("kept.ipynb", {"b": CellUpdate(small, 3)})
    assert len(reads) == 2
    saved = json.loads(path.read_text())
    assert "".join(saved["cells"][1]["source"]) == "print('edited')"
    assert saved["cells"][1]["execution_count"] == 3
    assert "".join(saved["cells"][0]["outputs"][0]["text"]) == "1\n"


async def test_the_copies_kept_are_bounded_in_bytes(
    tmp_path: Path, writer: NotebookWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = [{"output_type": "stream", "name": "stdout", "text": "x" * 40_000}]
    for name in ("one", "two", "three"):
        make_notebook(tmp_path / f"{name}.ipynb", [("a", "print(1)")])
    monkeypatch.setattr(writer_module, "CACHE_MAX_BYTES", 100_000)
    for name in ("one", "two", "three"):
        await writer.merge(f"{name}.ipynb", {"a": CellUpdate(big, 1)})
    # About 40 kB each: the one written longest ago goes.
    assert list(writer._written) == ["two.ipynb", "three.ipynb"]
    await writer.merge("two.ipynb", {"a": CellUpdate(big, 2)})
    await writer.merge("one.ipynb", {"a": CellUpdate(big, 2)})
    assert list(writer._written) == ["two.ipynb", "one.ipynb"]


async def test_the_parsed_copy_of_a_large_notebook_goes_when_its_run_ends(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    """Kept while a cell runs (no re-read per write); dropped soon after: it slows every GC."""
    code = (
        "import time\nfrom IPython.display import display\nprint('start', flush=True)\n"
        "display({'text/plain': 'x' * 1_500_000}, raw=True)\ntime.sleep(3)\nprint('DONE')"
    )
    make_notebook(jp_root_dir / "big.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("big.ipynb")
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: "big.ipynb" in capture.writer._written, what="the kept copy")
    assert execution.running
    await wait_for(lambda: not execution.running and not execution.dirty, timeout=30)
    # At the first flush tick KEEP_PARSED_SECONDS after the last write.
    await wait_for(lambda: "big.ipynb" not in capture.writer._written, what="the dropped copy")
    assert capture.flusher.copies_dropped == 1


def widget_notebook(metadata: dict[str, Any]) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook(metadata=metadata)
    cell = nbformat.v4.new_code_cell("bar()", id="w")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={"application/vnd.jupyter.widget-view+json": {"model_id": "m1"}},
        )
    ]
    notebook.cells = [cell, nbformat.v4.new_code_cell("1", id="plain")]
    return notebook


def fixed_state(roots: list[str], saved: Any) -> NotebookWidgets:
    return NotebookWidgets(
        state={root: {"model_name": "IntSliderModel", "state": {"value": 1}} for root in roots}
    )


def test_merge_widget_state_touches_only_the_widget_state() -> None:
    metadata = {"language_info": {"name": "python"}, "widgets": {"other/key": {"x": 1}}}
    notebook = widget_notebook(metadata)
    changed, built = merge_widget_state(notebook, fixed_state) or (None, None)
    assert changed is True
    assert built is not None
    widgets = notebook.metadata["widgets"]
    assert widgets["other/key"] == {"x": 1}
    assert widgets[STATE_MIME] == {
        "version_major": 2,
        "version_minor": 0,
        "state": {"m1": {"model_name": "IntSliderModel", "state": {"value": 1}}},
    }
    assert notebook.metadata["language_info"] == {"name": "python"}
    # The same state again: nothing to save.
    assert merge_widget_state(notebook, fixed_state) == (False, built)


def test_a_notebook_without_widget_views_is_left_alone() -> None:
    notebook = widget_notebook({})
    notebook.cells[0].outputs = []
    assert merge_widget_state(notebook, fixed_state) is None
    assert "widgets" not in notebook.metadata
    # Views whose models nobody has: no empty state is added either.
    notebook = widget_notebook({})
    assert merge_widget_state(notebook, lambda roots, saved: NotebookWidgets(state={})) == (
        False,
        NotebookWidgets(state={}),
    )
    assert "widgets" not in notebook.metadata


async def test_the_cells_we_write_are_trusted_and_the_notebook_signed(
    tmp_path: Path, writer: NotebookWriter
) -> None:
    path = tmp_path / "nb.ipynb"
    make_notebook(path, [("a", "bar()"), ("b", "1")])
    html = {
        "output_type": "display_data",
        "data": {"text/html": "<script>draw()</script>", "text/plain": "bar"},
        "metadata": {},
    }
    # A notary of its own: signatures are kept by content, across runs.
    (tmp_path / "notary").mkdir()
    notary = writer.contents_manager.notary = NotebookNotary(data_dir=str(tmp_path / "notary"))
    assert not notary.check_signature(nbformat.read(path, as_version=4))
    await writer.merge(path.name, {"a": CellUpdate([html], 1)})
    on_disk = nbformat.read(path, as_version=4)
    assert notary.check_signature(on_disk)  # a reopened page renders the output in full
    assert "trusted" not in on_disk.cells[0].metadata  # transient: not in the file


async def test_cells_run_one_after_another_have_their_notebook_read_once(
    tmp_path: Path, writer: NotebookWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parsed copy outlives a run for the next one's write, then goes at a later flush."""
    make_notebook(tmp_path / "nb.ipynb", [("a", "print(1)"), ("b", "print(2)")])
    reads = count_notebook_reads(monkeypatch, writer.contents_manager)
    store = CaptureStore()
    flusher = Flusher(store, writer, attached=lambda kernel_id: False)

    async def run_detached(msg_id: str, cell_id: str) -> None:
        finished_run(store, msg_id, cell_id, f"{msg_id}\n")
        assert await flusher.flush("nb.ipynb") == "written"

    await run_detached("m1", "a")
    await run_detached("m2", "b")
    assert reads == ["nb.ipynb"]  # the second run's write used the copy of the first's
    await flusher.flush_all()
    assert "nb.ipynb" in writer._written  # not yet KEEP_PARSED_SECONDS later
    monkeypatch.setattr(flusher_module, "KEEP_PARSED_SECONDS", 0.0)
    await flusher.flush_all()
    assert "nb.ipynb" not in writer._written
    assert flusher.copies_dropped == 1  # the heap trim looks at this
    await run_detached("m3", "a")
    assert reads == ["nb.ipynb", "nb.ipynb"]
    assert [stream_text(cell) for cell in read_cells(tmp_path / "nb.ipynb").values()] == [
        "m3\n",
        "m2\n",
    ]


async def test_a_running_cell_keeps_its_notebooks_copy_past_the_keep_time(
    tmp_path: Path, writer: NotebookWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_notebook(tmp_path / "nb.ipynb", [("a", "print(1)"), ("b", "print(2)")])
    store = CaptureStore()
    flusher = Flusher(store, writer, attached=lambda kernel_id: False)
    monkeypatch.setattr(flusher_module, "KEEP_PARSED_SECONDS", 0.0)
    finished_run(store, "m1", "a", "1\n")
    assert await flusher.flush("nb.ipynb") == "written"
    placed_run(store, "m2", "b")  # started before the next flush
    await flusher.flush_all()
    assert "nb.ipynb" in writer._written
    end_run(store, "m2", "2\n")
    assert await flusher.flush("nb.ipynb") == "written"
    await flusher.flush_all()
    assert "nb.ipynb" not in writer._written


async def test_every_copy_the_writer_keeps_goes_once_no_cell_of_it_runs(
    tmp_path: Path, writer: NotebookWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies from writes the flusher did not make (the journal's recovery, a write before
    a tab took over, a renamed notebook's old name) go too, and only copies are counted."""
    for name in ("recovered", "renamed"):
        make_notebook(tmp_path / f"{name}.ipynb", [("a", "print(1)")])
        await writer.merge(f"{name}.ipynb", {"a": CellUpdate([STREAM], 1)})
    store = CaptureStore()
    flusher = Flusher(store, writer, attached=lambda kernel_id: False)
    still_running = store.begin("k", "m1", cell_id="a")
    store.place(still_running, "renamed.ipynb", "a")
    await flusher.flush_all()
    assert sorted(writer.kept_paths()) == ["recovered.ipynb", "renamed.ipynb"]
    monkeypatch.setattr(flusher_module, "KEEP_PARSED_SECONDS", 0.0)
    await flusher.flush_all()
    assert writer.kept_paths() == ["renamed.ipynb"]  # its cell runs
    assert flusher.copies_dropped == 1
    # Nothing of a notebook is held any more: its copy goes with its bookkeeping, at once.
    flusher.forget_path("renamed.ipynb")
    assert writer.kept_paths() == []
    flusher.forget_path("never-written.ipynb")
    assert flusher.copies_dropped == 2
