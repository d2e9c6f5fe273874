"""The crash journal: diffs, folding, damaged files, owner-only files, restore rules."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import idle_msg, make_notebook, read_cells, stream_msg, stream_text
from jupyter_server.services.contents.filemanager import AsyncFileContentsManager

from jupyter_persist.model.store import CaptureStore
from jupyter_persist.storage import recorder as recorder_module
from jupyter_persist.storage.journal import (
    Journal,
    apply_diff,
    common_prefix_length,
    fold,
    output_diff,
)
from jupyter_persist.storage.recorder import Recorder
from jupyter_persist.storage.recovery import restore_journals
from jupyter_persist.storage.writer import NotebookWriter


def display(text: str) -> dict[str, Any]:
    return {"output_type": "display_data", "data": {"text/plain": text}, "metadata": {}}


def stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def test_common_prefix_length_agrees_with_the_standard_library() -> None:
    generator = random.Random(5)
    for _ in range(5000):
        a = "".join(generator.choice("ab\n") for _ in range(generator.randint(0, 14)))
        b = a[: generator.randint(0, len(a))] + "".join(
            generator.choice("ab\n") for _ in range(generator.randint(0, 6))
        )
        expected = len(os.path.commonprefix([a, b]))  # noqa: RUF071 (strings, not paths)
        assert common_prefix_length(a, b) == expected, (a, b)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ([], [stream("a")]),
        ([stream("a")], [stream("ab")]),
        ([stream("abc\rX")], [stream("Xbc")]),
        ([stream("a"), display("x")], [stream("a"), display("y")]),
        ([stream("a")], []),
        ([stream("a", "stderr")], [stream("ab", "stdout")]),
        ([display("x"), stream("long text")], [display("x"), stream("long text!"), display("z")]),
    ],
)
def test_diff_round_trips(old: list[Any], new: list[Any]) -> None:
    keep, keep_text, tail = output_diff(tuple(old), tuple(new))
    assert apply_diff([dict(o) for o in old], keep, keep_text, json.loads(json.dumps(tail))) == new


def test_appended_stream_text_is_journaled_as_the_new_part_only() -> None:
    keep, keep_text, tail = output_diff((stream("x" * 10_000),), (stream("x" * 10_000 + "new"),))
    assert (keep, keep_text) == (0, 10_000)
    assert tail == [stream("new")]


def test_journal_appends_diffs_and_folds_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journals")
    journal.ensure_directory()
    store = CaptureStore()
    execution = store.begin("k", "m1")
    store.place(execution, "dir/nb.ipynb", "c")
    sizes = []
    for i in range(50):
        store.apply(stream_msg("m1", f"line {i}\n"), detached=True)
        sizes.append(journal.append([execution]))
    assert journal.append([execution]) == 0  # nothing changed
    assert max(sizes[1:]) < 300, "each record carries only the new line"
    file = journal.file_for("dir/nb.ipynb")
    cells = fold(journal.read(file))
    assert cells[("dir/nb.ipynb", "c")].outputs == [
        stream("".join(f"line {i}\n" for i in range(50)))
    ]
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "journals").st_mode) == 0o700


def test_damaged_journal_recovers_the_valid_prefix(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.ensure_directory()
    store = CaptureStore()
    execution = store.begin("k", "m1")
    store.place(execution, "nb.ipynb", "c")
    store.apply(stream_msg("m1", "kept\n"), detached=True)
    journal.append([execution])
    file = journal.file_for("nb.ipynb")
    with file.open("ab") as handle:
        handle.write(b'{"t": 1, "path": "nb.ipynb", "tail": [trunc')
    records = journal.read(file)
    assert len(records) == 1
    assert fold(records)[("nb.ipynb", "c")].outputs == [stream("kept\n")]


async def journal_for(tmp_path: Path, text: str) -> tuple[Journal, NotebookWriter]:
    (tmp_path / "root").mkdir(exist_ok=True)
    journal = Journal(tmp_path / "state")
    journal.ensure_directory()
    store = CaptureStore()
    execution = store.begin("k", "m1")
    store.place(execution, "nb.ipynb", "c")
    store.apply(stream_msg("m1", text), detached=True)
    journal.append([execution])
    writer = NotebookWriter(
        contents_manager=AsyncFileContentsManager(root_dir=str(tmp_path / "root"))
    )
    return journal, writer


async def test_restore_merges_and_removes_the_journal(tmp_path: Path) -> None:
    make_notebook(tmp_path / "root" / "nb.ipynb", [("c", "print()")])
    os.utime(tmp_path / "root" / "nb.ipynb", (1, 1))  # saved long before the journal
    journal, writer = await journal_for(tmp_path, "journaled\n")
    await restore_journals(journal, writer, writer.log)
    assert stream_text(read_cells(tmp_path / "root" / "nb.ipynb")["c"]) == "journaled\n"
    assert journal.files() == []


async def test_restore_never_overwrites_a_notebook_changed_later(
    tmp_path: Path, caplog: Any
) -> None:
    journal, writer = await journal_for(tmp_path, "journaled\n")
    make_notebook(tmp_path / "root" / "nb.ipynb", [("c", "print()")])
    later = os.stat(journal.files()[0]).st_mtime + 60
    os.utime(tmp_path / "root" / "nb.ipynb", (later, later))
    before = (tmp_path / "root" / "nb.ipynb").read_bytes()
    await restore_journals(journal, writer, writer.log)
    assert (tmp_path / "root" / "nb.ipynb").read_bytes() == before
    assert len(journal.files()) == 1
    assert any("not restoring over it" in r.getMessage() for r in caplog.records)


async def test_restore_keeps_the_journal_of_a_missing_notebook(tmp_path: Path) -> None:
    journal, writer = await journal_for(tmp_path, "journaled\n")
    await restore_journals(journal, writer, writer.log)
    assert len(journal.files()) == 1
    assert not (tmp_path / "root" / "nb.ipynb").exists()


def test_a_long_run_keeps_the_journal_bounded(tmp_path: Path) -> None:
    journal = Journal(tmp_path, compact_bytes=20_000)
    journal.ensure_directory()
    store = CaptureStore()
    old = store.begin("k", "m0")
    store.place(old, "nb.ipynb", "c")
    store.apply(stream_msg("m0", "replaced by the next run\n"), detached=True)
    journal.append([old])
    execution = store.begin("k", "m1")
    store.place(execution, "nb.ipynb", "c")  # a new run of the same cell
    for i in range(5000):
        store.apply(stream_msg("m1", f"progress {i}\r"), detached=True)
        journal.append([execution])
    file = journal.file_for("nb.ipynb")
    assert file.stat().st_size < 40_000
    cells = fold(journal.read(file))
    assert cells[("nb.ipynb", "c")].outputs == [stream("progress 4999")]
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    assert not list(tmp_path.glob("*.compacting"))


def test_a_cell_run_again_and_again_keeps_one_diff_base(tmp_path: Path) -> None:
    """Only what the store holds is remembered: a run replaced by the next one goes."""
    journal = Journal(tmp_path, compact_bytes=20_000)
    journal.ensure_directory()
    store = CaptureStore()
    for i in range(100):
        execution = store.begin("k", f"m{i}")
        store.place(execution, "nb.ipynb", "c")
        store.apply(stream_msg(f"m{i}", f"run {i} " + "x" * 1000 + "\n"), detached=False)
        journal.append([e for e in store.executions() if e.placed])
    assert list(journal._journaled) == ["m99"]
    cells = fold(journal.read(journal.file_for("nb.ipynb")))
    assert cells[("nb.ipynb", "c")].outputs == [stream("run 99 " + "x" * 1000 + "\n")]
    assert "nb.ipynb" in journal._compact_at  # it was compacted on the way
    journal.remove("nb.ipynb")
    assert journal._journaled == {}
    assert journal._compact_at == {}


def test_outputs_all_on_disk_are_not_journaled_again(tmp_path: Path) -> None:
    """A notebook's journal goes once its outputs are written; nothing brings it back.

    Found measuring memory: runs the server keeps after writing them (no client saw
    them) were journaled afresh and compacted at every tick, 32 MB a second for 40
    cells of 400 kB, for as long as their kernel lived.
    """
    journal = Journal(tmp_path, compact_bytes=20_000)
    journal.ensure_directory()
    store = CaptureStore()
    recorder = Recorder(store, NotebookWriter(), journal, None, interval=1.0)
    execution = store.begin("k", "m0")
    store.place(execution, "nb.ipynb", "c")
    store.apply(stream_msg("m0", "x" * 50_000 + "\n"), detached=True)
    store.apply(idle_msg("m0"), detached=True)
    recorder.tick()
    assert journal.file_for("nb.ipynb").exists()  # not on disk yet: journaled
    execution.written_version = execution.version  # the writer wrote it
    recorder.tick()
    assert not journal.file_for("nb.ipynb").exists()
    untouched = os.stat(tmp_path).st_mtime_ns
    for _ in range(3):
        time.sleep(0.01)
        recorder.tick()
    assert os.stat(tmp_path).st_mtime_ns == untouched  # no file made and removed again
    assert journal._journaled == {}


def test_a_journal_of_many_finished_runs_is_not_rewritten(tmp_path: Path) -> None:
    """Compacting drops superseded records; a journal without any is left as it is."""
    journal = Journal(tmp_path, compact_bytes=20_000)
    journal.ensure_directory()
    store = CaptureStore()
    for i in range(30):
        execution = store.begin("k", f"m{i}")
        store.place(execution, "nb.ipynb", f"c{i}")  # 30 cells, each run once
        store.apply(stream_msg(f"m{i}", f"cell {i} " + "x" * 10_000 + "\n"), detached=False)
        journal.append([e for e in store.executions() if e.placed])
        if i == 0:  # a second name keeps the first file's inode from being reused
            os.link(journal.file_for("nb.ipynb"), tmp_path / "first")
    file = journal.file_for("nb.ipynb")
    assert file.stat().st_ino == (tmp_path / "first").stat().st_ino  # never compacted
    assert file.stat().st_size > 300_000
    cells = fold(journal.read(file))
    assert cells[("nb.ipynb", "c29")].outputs == [stream("cell 29 " + "x" * 10_000 + "\n")]


def journaled_runs(store: CaptureStore, paths: list[str]) -> list[Any]:
    """One run per notebook (or per cell, paths repeated), each having printed a line."""
    runs = []
    for i, path in enumerate(paths):
        execution = store.begin("k", f"m{i}")
        store.place(execution, path, f"c{i}")
        store.apply(stream_msg(f"m{i}", f"a{i}\n"), detached=True)
        runs.append(execution)
    return runs


async def test_an_append_in_steps_gives_the_loop_back_between_runs(tmp_path: Path) -> None:
    """Each step's records are on disk before the loop runs anything else."""
    journal = Journal(tmp_path)
    journal.ensure_directory()
    store = CaptureStore()
    runs = journaled_runs(store, ["nb.ipynb"] * 4)
    file = journal.file_for("nb.ipynb")
    seen_between_steps: list[int] = []
    appending = asyncio.ensure_future(journal.append_in_steps(runs, 0.0))
    while not appending.done():
        seen_between_steps.append(len(journal.read(file)) if file.exists() else 0)
        await asyncio.sleep(0)
    assert appending.result() > 0
    # The loop ran between the records of the four runs, each written in its step.
    assert {1, 2, 3} <= set(seen_between_steps)
    cells = fold(journal.read(file))
    assert [cells[("nb.ipynb", f"c{i}")].outputs for i in range(4)] == [
        [stream(f"a{i}\n")] for i in range(4)
    ]


async def test_an_append_between_two_steps_keeps_the_journal_in_order(tmp_path: Path) -> None:
    """The server stopping journals everything while a periodic append is under way."""
    journal = Journal(tmp_path)
    journal.ensure_directory()
    store = CaptureStore()
    runs = journaled_runs(store, ["nb.ipynb"] * 3)
    appending = asyncio.ensure_future(journal.append_in_steps(runs, 0.0))
    await asyncio.sleep(0)  # the first step: run 0's record
    await asyncio.sleep(0)
    assert not appending.done()
    for i in range(3):  # every run prints more, and a whole append runs meanwhile
        store.apply(stream_msg(f"m{i}", f"b{i}\n"), detached=True)
    journal.append(runs)
    await appending
    store.apply(stream_msg("m0", "c0\n"), detached=True)
    journal.append(runs)
    cells = fold(journal.read(journal.file_for("nb.ipynb")))
    assert cells[("nb.ipynb", "c0")].outputs == [stream("a0\nb0\nc0\n")]
    assert cells[("nb.ipynb", "c1")].outputs == [stream("a1\nb1\n")]
    assert cells[("nb.ipynb", "c2")].outputs == [stream("a2\nb2\n")]


def stepping_recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """A recorder whose periodic tick gives the loop back after every run's record."""
    monkeypatch.setattr(recorder_module, "JOURNAL_STEP", 0.0)
    journal = Journal(tmp_path)
    journal.ensure_directory()
    return Recorder(CaptureStore(), NotebookWriter(), journal, None, interval=1.0)


async def test_the_periodic_journal_tick_gives_the_loop_back_between_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = stepping_recorder(tmp_path, monkeypatch)
    store, journal = recorder.store, recorder.journal
    journaled_runs(store, [f"nb{i}.ipynb" for i in range(3)])
    ticking = asyncio.ensure_future(recorder._timed_tick())
    turns = 0
    while not ticking.done():
        turns += 1
        await asyncio.sleep(0)
    assert turns >= 3
    assert all(journal.file_for(f"nb{i}.ipynb").exists() for i in range(3))


async def test_a_failed_step_then_an_append_between_steps_keeps_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk was full for a moment, and the server stops amid a periodic append."""
    journal = Journal(tmp_path)
    journal.ensure_directory()
    store = CaptureStore()
    runs = journaled_runs(store, ["nb.ipynb"] * 3)
    appends = 0
    append_bytes = journal._append_bytes

    def full_once(file: Path, data: bytes) -> int:
        nonlocal appends
        appends += 1
        if appends == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return append_bytes(file, data)

    monkeypatch.setattr(journal, "_append_bytes", full_once)
    appending = asyncio.ensure_future(journal.append_in_steps(runs, 0.0))
    await asyncio.sleep(0)  # the first step: its write fails
    assert appends == 1
    assert not appending.done()
    for i in range(3):
        store.apply(stream_msg(f"m{i}", f"b{i}\n"), detached=True)
    journal.append(runs)  # finishes the steps, then rewrites the failed journal whole
    store.apply(stream_msg("m1", "c1\n"), detached=True)
    await appending
    store.apply(stream_msg("m1", "d1\n"), detached=True)
    journal.append(runs)
    cells = fold(journal.read(journal.file_for("nb.ipynb")))
    assert cells[("nb.ipynb", "c0")].outputs == [stream("a0\nb0\n")]
    assert cells[("nb.ipynb", "c1")].outputs == [stream("a1\nb1\nc1\nd1\n")]
    assert cells[("nb.ipynb", "c2")].outputs == [stream("a2\nb2\n")]


async def test_a_journal_removed_between_two_steps_stays_removed(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.ensure_directory()
    store = CaptureStore()
    runs = journaled_runs(store, ["nb0.ipynb", "nb1.ipynb", "nb2.ipynb"])
    appending = asyncio.ensure_future(journal.append_in_steps(runs, 0.0))
    await asyncio.sleep(0)  # nb0's record
    assert not appending.done()
    journal.remove("nb1.ipynb")  # its outputs are on disk (a tab saved it, say)
    assert await appending is None  # ended: the next append does the rest
    assert not journal.file_for("nb1.ipynb").exists()
    store.apply(stream_msg("m1", "b1\n"), detached=True)
    journal.append(runs)
    assert fold(journal.read(journal.file_for("nb2.ipynb")))[("nb2.ipynb", "c2")].outputs == [
        stream("a2\n")
    ]
    cells = fold(journal.read(journal.file_for("nb1.ipynb")))
    assert cells[("nb1.ipynb", "c1")].outputs == [stream("a1\nb1\n")]


class CountingTextLog:
    """Stands in for the text log: counts its flushes."""

    def __init__(self) -> None:
        self.flushes = 0

    def flush(self, held: list[Any]) -> None:
        self.flushes += 1


async def test_the_last_tick_of_a_stopping_server_ends_a_periodic_one_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = stepping_recorder(tmp_path, monkeypatch)
    store, journal = recorder.store, recorder.journal
    text_log = CountingTextLog()
    recorder.text_log = text_log  # type: ignore[assignment]
    runs = journaled_runs(store, [f"nb{i}.ipynb" for i in range(3)])
    ticking = asyncio.ensure_future(recorder._timed_tick())
    await asyncio.sleep(0)
    assert journal.file_for("nb0.ipynb").exists()
    assert not ticking.done()
    # Every run ends, is written, and the server lets go of it (the file holds it).
    for i, execution in enumerate(runs):
        store.apply(idle_msg(f"m{i}"), detached=True)
        execution.written_version = execution.version
        assert store.release_written(f"nb{i}.ipynb") == 1
    recorder.stop()
    recorder.tick()  # the server's last tick, as it stops
    await ticking
    assert journal.files() == []
    assert text_log.flushes == 1, "the periodic tick went on after the server's last one"
