"""Writing outputs into a collaboration room's shared notebook (jupyter-ydoc, pycrdt),
and the flusher's choice between the room and the file.

The room's document is a real ``jupyter_ydoc.YNotebook``; a tab is another one, kept in
sync by exchanging updates the way the room's websocket does.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import apply_iopub
from jupyter_server.services.contents.filemanager import AsyncFileContentsManager
from jupyter_ydoc import YNotebook

from jupyter_persist.model.guard import reconcile_save
from jupyter_persist.model.reducer import normalized_outputs
from jupyter_persist.model.store import CaptureStore, Execution
from jupyter_persist.storage.flusher import Flusher
from jupyter_persist.storage.room import (
    RoomUnsupported,
    open_room_document,
    room_extension_loaded,
    room_is_loaded,
    sync_outputs,
    write_into_room,
)
from jupyter_persist.storage.writer import CellUpdate, NotebookWriter

SOURCE = "for i in range(3):\n    print(i)"
METADATA = {"tags": ["keep"], "collapsed": False}


def stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def notebook_json(outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": [
            {
                "id": "run",
                "cell_type": "code",
                "source": SOURCE,
                "metadata": copy.deepcopy(METADATA),
                "outputs": outputs or [],
                "execution_count": None,
            },
            {"id": "text", "cell_type": "markdown", "source": "# Notes", "metadata": {}},
        ],
    }


def room_with(outputs: list[dict[str, Any]] | None = None) -> YNotebook:
    room = YNotebook()
    room.set(notebook_json(outputs))
    return room


def cell(room: YNotebook, index: int = 0) -> dict[str, Any]:
    return room.get()["cells"][index]


def ycell(room: YNotebook, index: int = 0) -> Any:
    return room.ycells[index]


def update_bytes(room: YNotebook, change: Any) -> int:
    """Bytes of the update ``change()`` makes to the room's document."""
    before = room.ydoc.get_state()
    change()
    return len(room.ydoc.get_update(before))


def test_writes_outputs_and_count_and_nothing_else() -> None:
    room = room_with([stream("0\n")])
    outputs = [
        stream("0\n1\n2\n"),
        {"output_type": "error", "ename": "E", "evalue": "x", "traceback": ["E: x"]},
    ]
    result = write_into_room(room, {"run": CellUpdate(outputs, 4)}, finished={"run"})
    assert result.merged == {"run"}
    assert not result.missing
    assert result.changed
    saved = cell(room)
    assert saved["outputs"] == outputs
    assert saved["execution_count"] == 4
    assert saved["source"] == SOURCE
    assert saved["metadata"] == METADATA
    assert cell(room, 1) == notebook_json()["cells"][1]


def test_unchanged_outputs_change_nothing() -> None:
    outputs = [stream("0\n1\n")]
    room = room_with()
    write_into_room(room, {"run": CellUpdate(outputs, 1)}, finished={"run"})
    state = room.ydoc.get_state()
    result = write_into_room(room, {"run": CellUpdate(outputs, 1)}, {"run"})
    assert not result.changed
    assert room.ydoc.get_state() == state  # no transaction added anything


def test_a_growing_stream_gets_only_its_new_text() -> None:
    """The room stores and sends every update: a long output is not rewritten each time."""
    long_text = "".join(f"line {i}\n" for i in range(20_000))
    room = room_with()
    write_into_room(room, {"run": CellUpdate([stream(long_text)], None)}, set())
    grown = long_text + "line 20000\n"
    size = update_bytes(
        room, lambda: write_into_room(room, {"run": CellUpdate([stream(grown)], None)}, set())
    )
    assert size < 200, size
    assert cell(room)["outputs"] == [stream(grown)]


def test_a_carriage_return_rewrite_edits_the_end_in_place() -> None:
    room = room_with()
    head = "".join(f"epoch {i}\n" for i in range(5_000))
    write_into_room(room, {"run": CellUpdate([stream(head + "progress 10%")], None)}, set())
    size = update_bytes(
        room,
        lambda: write_into_room(
            room, {"run": CellUpdate([stream(head + "progress 20%")], None)}, set()
        ),
    )
    assert size < 200, size
    assert cell(room)["outputs"] == [stream(head + "progress 20%")]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([stream("a\n"), stream("b\n", "stderr")], [stream("a\n")]),  # fewer outputs
        ([stream("a\n")], []),  # cleared
        ([stream("a\n", "stderr")], [stream("a\nb\n")]),  # another stream name
        (
            [{"output_type": "display_data", "data": {"text/plain": "1"}, "metadata": {}}],
            [{"output_type": "display_data", "data": {"text/plain": "2"}, "metadata": {}}],
        ),
        (
            [stream("a\n")],
            [
                stream("a\n"),
                {
                    "output_type": "execute_result",
                    "data": {"text/plain": "3"},
                    "metadata": {},
                    "execution_count": 2,
                },
            ],
        ),
    ],
)
def test_outputs_end_equal(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    room = room_with(before)
    write_into_room(room, {"run": CellUpdate(after, 2)}, set())
    assert cell(room)["outputs"] == after


def test_a_run_shows_as_running_without_a_count_until_it_is_over() -> None:
    """As JupyterLab shows a run: a count marks the cell idle in the tabs."""
    room = room_with()
    write_into_room(room, {"run": CellUpdate([stream("1\n")], 1)}, finished=set())
    assert ycell(room)["execution_state"] == "running"
    assert ycell(room)["execution_count"] is None
    write_into_room(room, {"run": CellUpdate([stream("1\n2\n")], 1)}, finished={"run"})
    assert ycell(room)["execution_state"] == "idle"
    assert ycell(room)["execution_count"] == 1


def test_cells_the_room_lacks_are_reported_missing() -> None:
    room = room_with()
    result = write_into_room(
        room,
        {"gone": CellUpdate([stream("x\n")], 1), "text": CellUpdate([stream("y\n")], 1)},
        set(),
    )
    assert result.missing == {"gone", "text"}  # no such cell; not a code cell
    assert not result.merged
    assert not result.changed
    assert cell(room, 1) == notebook_json()["cells"][1]


def test_a_tabs_offline_source_edit_and_the_outputs_both_survive() -> None:
    """The point of writing the room rather than the file: concurrent edits merge."""
    room = room_with([stream("0\n")])
    tab = YNotebook()
    tab.ydoc.apply_update(room.ydoc.get_update())
    tab_state, room_state = tab.ydoc.get_state(), room.ydoc.get_state()

    # Offline: the tab edits the running cell's source; the extension writes outputs.
    tab.ycells[0]["source"].insert(0, "# edited offline\n")
    write_into_room(room, {"run": CellUpdate([stream("0\n1\n2\n")], 1)}, {"run"})

    # Back online: each side gets what the other did.
    room.ydoc.apply_update(tab.ydoc.get_update(room_state))
    tab.ydoc.apply_update(room.ydoc.get_update(tab_state))
    for doc in (room, tab):
        saved = cell(doc)
        assert saved["source"] == "# edited offline\n" + SOURCE
        assert saved["outputs"] == [stream("0\n1\n2\n")]
        assert saved["execution_count"] == 1


def test_a_room_still_loading_has_no_cells() -> None:
    assert not room_is_loaded(YNotebook())
    assert room_is_loaded(room_with())


def test_a_document_that_is_not_a_notebook_is_refused() -> None:
    with pytest.raises(RoomUnsupported):
        write_into_room(object(), {"run": CellUpdate([], None)}, set())


def test_sync_outputs_reports_no_change_for_equal_outputs() -> None:
    room = room_with([stream("a\n")])
    youtputs = ycell(room)["outputs"]
    assert not sync_outputs(youtputs, [stream("a\n")], room._create_youtputs)
    assert sync_outputs(youtputs, [stream("a\nb\n")], room._create_youtputs)


async def test_no_room_without_collaboration() -> None:
    assert await open_room_document({}, "a.ipynb") is None


def test_collaboration_turned_off_opens_no_room() -> None:
    """``YDocExtension.disable_rtc`` keeps the extension in the settings, rooms closed."""

    class YDocExtension:
        disable_rtc = False

    settings: dict[str, Any] = {"jupyter_server_ydoc": YDocExtension(), "file_id_manager": 1}
    assert room_extension_loaded(settings)
    settings["jupyter_server_ydoc"].disable_rtc = True
    assert not room_extension_loaded(settings)


# -- the flusher: where a notebook's outputs go while its room is open ----------------


class Rooms:
    """What the flusher's ``find_room`` returns for a notebook (the real lookup needs RTC)."""

    def __init__(self) -> None:
        self.document: Any = None
        self.error: Exception | None = None
        self.lookups = 0

    async def find(self, path: str) -> Any:
        self.lookups += 1
        if self.error is not None:
            raise self.error
        return self.document


@pytest.fixture
def flushing(tmp_path: Path) -> tuple[CaptureStore, Flusher, Rooms, Path]:
    nb_path = tmp_path / "nb.ipynb"
    nb_path.write_text(json.dumps(notebook_json()))
    store = CaptureStore()
    writer = NotebookWriter(contents_manager=AsyncFileContentsManager(root_dir=str(tmp_path)))
    rooms = Rooms()
    flusher = Flusher(store, writer, attached=lambda kernel_id: False, find_room=rooms.find)
    return store, flusher, rooms, nb_path


def start_run(store: CaptureStore, msg_id: str = "m1") -> Execution:
    execution = store.begin("k", msg_id, cell_id="run", code=SOURCE)
    store.place(execution, "nb.ipynb", "run")
    apply_iopub(store, msg_id, "status", {"execution_state": "busy"})
    apply_iopub(store, msg_id, "execute_input", {"code": SOURCE, "execution_count": 1})
    return execution


def print_line(store: CaptureStore, text: str, msg_id: str = "m1") -> None:
    apply_iopub(store, msg_id, "stream", {"name": "stdout", "text": text})


def disk_outputs(nb_path: Path) -> list[Any] | None:
    return normalized_outputs(json.loads(nb_path.read_text())["cells"][0]["outputs"])


def warnings_of(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


async def test_an_open_room_gets_the_outputs_and_the_file_waits_for_its_save(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
) -> None:
    store, flusher, rooms, nb_path = flushing
    rooms.document = room_with()
    ycell(rooms.document)["execution_state"] = "running"
    execution = start_run(store)
    print_line(store, "0\n")
    assert await flusher.flush("nb.ipynb") == "written to room"
    assert cell(rooms.document)["outputs"] == [stream("0\n")]
    assert cell(rooms.document)["execution_count"] is None  # running
    assert ycell(rooms.document)["execution_state"] == "running"
    assert disk_outputs(nb_path) == []  # the room saves the file, not us
    assert await flusher.flush("nb.ipynb") == "in room"
    print_line(store, "1\n")
    apply_iopub(store, "m1", "status", {"execution_state": "idle"})
    assert not execution.running
    assert await flusher.flush("nb.ipynb") == "written to room"
    assert cell(rooms.document)["outputs"] == [stream("0\n1\n")]
    assert ycell(rooms.document)["execution_state"] == "idle"
    assert cell(rooms.document)["execution_count"] == 1

    # The room's save passes the save guard, which counts the outputs as written.
    report = reconcile_save(store, "nb.ipynb", rooms.document.get()["cells"])
    assert report.clean == [execution]
    report.commit()
    assert not execution.dirty
    assert await flusher.flush("nb.ipynb") == "up to date"


async def test_a_room_that_closed_leaves_the_outputs_to_the_file(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
) -> None:
    store, flusher, rooms, nb_path = flushing
    rooms.document = room_with()
    start_run(store)
    print_line(store, "0\n")
    assert await flusher.flush("nb.ipynb") == "written to room"
    rooms.document = None  # closed before it saved
    assert await flusher.flush("nb.ipynb") == "written"
    assert disk_outputs(nb_path) == [stream("0\n")]


async def test_a_room_still_loading_is_waited_for(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
) -> None:
    store, flusher, rooms, nb_path = flushing
    rooms.document = YNotebook()
    start_run(store)
    print_line(store, "0\n")
    assert await flusher.flush("nb.ipynb") == "room loading"
    assert disk_outputs(nb_path) == []
    rooms.document.set(notebook_json())
    assert await flusher.flush("nb.ipynb") == "written to room"


async def test_a_stopping_server_writes_the_file_room_or_not(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
) -> None:
    """A stopping server cancels the rooms' pending saves: only the file write is sure."""
    store, flusher, rooms, nb_path = flushing
    rooms.document = room_with()
    start_run(store)
    print_line(store, "0\n")
    assert await flusher.flush("nb.ipynb", ignore_clients=True) == "written"
    assert disk_outputs(nb_path) == [stream("0\n")]
    assert rooms.lookups == 0


@pytest.mark.parametrize(
    ("document", "error", "warning"),
    [
        (None, RuntimeError("ydoc broke"), "cannot look up the collaboration room of nb.ipynb"),
        (object(), None, "cannot write into the collaboration room of nb.ipynb"),
    ],
)
async def test_a_room_that_cannot_be_used_is_one_warning_and_the_file_is_written(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
    caplog: pytest.LogCaptureFixture,
    document: Any,
    error: Exception | None,
    warning: str,
) -> None:
    store, flusher, rooms, nb_path = flushing
    rooms.document, rooms.error = document, error
    start_run(store)
    with caplog.at_level(logging.INFO):
        for index in range(3):
            print_line(store, f"{index}\n")
            # Each tick writes the file well; that must not end the room's warning.
            assert await flusher.flush("nb.ipynb", ignore_pause=True) == "written"
    assert disk_outputs(nb_path) == [stream("0\n1\n2\n")]
    assert len(warnings_of(caplog, warning)) == 1, caplog.text
    assert not [r for r in caplog.records if r.exc_info]


async def test_cells_missing_from_the_room_are_one_warning(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, flusher, rooms, _ = flushing
    rooms.document = room_with()
    rooms.document.ycells[0]["id"] = "renamed"
    start_run(store)
    with caplog.at_level(logging.INFO):
        for index in range(3):
            print_line(store, f"{index}\n")
            assert await flusher.flush("nb.ipynb") == "in room"
    assert len(warnings_of(caplog, "are not in its collaboration room")) == 1, caplog.text
    assert cell(rooms.document)["outputs"] == []


async def test_flush_into_room_writes_even_with_a_client_attached(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
) -> None:
    """Before a replay to a returning tab, the room is brought up to date, tab or not."""
    store, flusher, rooms, _ = flushing
    flusher.attached = lambda kernel_id: True
    start_run(store)
    print_line(store, "0\n")
    assert await flusher.flush_into_room("nb.ipynb") is None  # no room open
    rooms.document = room_with()
    assert await flusher.flush("nb.ipynb") == "client attached"
    execution = store.get("m1")
    assert execution is not None
    assert await flusher.flush_into_room("nb.ipynb") is rooms.document
    assert execution.in_room(rooms.document)
    assert cell(rooms.document)["outputs"] == [stream("0\n")]
    print_line(store, "1\n")
    assert not execution.in_room(rooms.document)
    assert not execution.in_room(room_with())


async def test_with_tabs_attached_the_room_gets_the_runs_whose_own_tab_left(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
) -> None:
    """A tab reopened under collaboration sees the room; only its runner put outputs there."""
    store, flusher, rooms, nb_path = flushing
    attached_sessions = {"reopened"}
    flusher.attached = lambda kernel_id: True
    flusher.owner_attached = lambda e: e.client_session in attached_sessions
    rooms.document = room_with()
    execution = start_run(store)
    execution.client_session = "runner"
    print_line(store, "0\n")
    assert await flusher.flush("nb.ipynb") == "written to room"
    assert cell(rooms.document)["outputs"] == [stream("0\n")]

    attached_sessions.add("runner")  # the runner came back: it puts outputs in the room
    print_line(store, "1\n")
    assert await flusher.flush("nb.ipynb") == "client attached"
    assert cell(rooms.document)["outputs"] == [stream("0\n")]

    attached_sessions.discard("runner")
    rooms.document = None  # no room: attached tabs own the file, as always
    assert await flusher.flush("nb.ipynb") == "client attached"
    assert disk_outputs(nb_path) == []


async def test_a_page_that_owns_the_file_stops_file_writes(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
) -> None:
    store, flusher, _, nb_path = flushing
    owned = {"nb.ipynb"}
    flusher.page_owns = lambda path: path in owned
    start_run(store)
    print_line(store, "0\n")
    assert await flusher.flush("nb.ipynb") == "page loading"
    assert disk_outputs(nb_path) == []
    owned.clear()
    assert await flusher.flush("nb.ipynb") == "written"


async def test_a_run_that_ends_silently_gets_its_count_and_idle_state(
    flushing: tuple[CaptureStore, Flusher, Rooms, Path],
) -> None:
    """The room saved the running cell (no count) and the run then ends with no output."""
    store, flusher, rooms, _ = flushing
    rooms.document = room_with()
    execution = start_run(store)
    print_line(store, "0\n")
    assert await flusher.flush("nb.ipynb") == "written to room"
    report = reconcile_save(store, "nb.ipynb", rooms.document.get()["cells"])
    assert report.clean == [execution]  # running, saved without its count
    report.commit()
    assert await flusher.flush("nb.ipynb") == "up to date"
    apply_iopub(store, "m1", "status", {"execution_state": "idle"})
    assert await flusher.flush("nb.ipynb") == "written to room"
    assert cell(rooms.document)["execution_count"] == 1
    assert ycell(rooms.document)["execution_state"] == "idle"
