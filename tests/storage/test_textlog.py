"""The live text log: what a person reads with tail -f."""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import LabLikeClient, idle_msg, make_notebook, stream_msg, wait_for

from jupyter_persist.model.caps import Limits
from jupyter_persist.model.store import CaptureStore
from jupyter_persist.storage import textlog
from jupyter_persist.storage.textlog import TextLog, notebook_of_log


def feed(log: TextLog, store: CaptureStore, execution: Any, message: dict[str, Any]) -> None:
    log.feed(execution, message)
    store.apply(message, detached=True)


def start_cell(store: CaptureStore, msg_id: str) -> Any:
    execution = store.begin("k", msg_id)
    store.place(execution, "folder/My Notebook.ipynb", f"cell-{msg_id}")
    store.apply(
        {
            "header": {"msg_type": "execute_input"},
            "parent_header": {"msg_id": msg_id},
            "content": {"code": "", "execution_count": 7},
        },
        detached=True,
    )
    return execution


def test_lines_are_logged_once_final(tmp_path: Path) -> None:
    log = TextLog(tmp_path, max_bytes=1_000_000)
    store = CaptureStore()
    execution = start_cell(store, "m1")
    feed(log, store, execution, stream_msg("m1", "one\ntw"))
    log.flush([execution])
    file = log.file_for("folder/My Notebook.ipynb")
    assert file.read_text().endswith("===\none\n")
    feed(log, store, execution, stream_msg("m1", "o\n\r 10%\r 50%"))
    feed(log, store, execution, stream_msg("m1", "\r100%\n"))
    log.flush([execution])
    log.flush([execution])  # nothing new: nothing written
    error = {
        "header": {"msg_type": "error"},
        "parent_header": {"msg_id": "m1"},
        "content": {
            "ename": "ValueError",
            "evalue": "bad",
            "traceback": ["\x1b[0;31mValueError\x1b[0m: bad"],
        },
    }
    feed(log, store, execution, stream_msg("m1", "unfinished"))
    feed(log, store, execution, error)
    feed(log, store, execution, idle_msg("m1"))
    log.flush([execution])
    assert file.name.startswith("My_Notebook-")
    title, rest = file.read_text().split("\n", 1)
    header, body = rest.strip("\n").split("\n", 1)
    assert title == "# jupyter-persist text log of folder/My Notebook.ipynb"
    assert notebook_of_log(file) == "folder/My Notebook.ipynb"
    assert header.startswith("=== ")
    assert header.endswith("In [7]  cell cell-m1 ===")
    assert body == "one\ntwo\n100%\nunfinished\nValueError: bad"
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600


def test_a_run_replaced_before_a_tick_is_logged_whole_and_let_go(tmp_path: Path) -> None:
    """A cell run again within a second: the first run's text still reaches the log."""
    log = TextLog(tmp_path, max_bytes=1_000_000)
    store = CaptureStore()
    first = start_cell(store, "m1")
    feed(log, store, first, stream_msg("m1", "first run\nunfinished"))
    second = store.begin("k", "m2")
    store.place(second, "folder/My Notebook.ipynb", "cell-m1")  # the same cell, again
    feed(log, store, second, stream_msg("m2", "second run\n"))
    assert store.get("m1") is None
    log.flush(list(store.executions()))
    text = log.file_for("folder/My Notebook.ipynb").read_text()
    assert "===\nfirst run\nunfinished\n\n===" in text
    assert text.endswith("===\nsecond run\n")
    assert list(log._pending) == ["m2"]  # still running
    feed(log, store, second, idle_msg("m2"))
    log.flush(list(store.executions()))
    assert log._pending == {}


def test_the_log_keeps_what_the_caps_leave_out(tmp_path: Path) -> None:
    log = TextLog(tmp_path, max_bytes=100_000_000)
    store = CaptureStore(Limits(stream_head_chars=1000, stream_tail_chars=1000))
    execution = start_cell(store, "m1")
    for i in range(20_000):
        feed(log, store, execution, stream_msg("m1", f"line {i}\n"))
    feed(log, store, execution, idle_msg("m1"))
    log.flush([execution])
    assert "left out" in execution.area.outputs[0]["text"]
    body = log.file_for("folder/My Notebook.ipynb").read_text().split("===\n", 1)[1]
    assert body == "".join(f"line {i}\n" for i in range(20_000))


def test_a_flood_is_written_as_it_comes_and_a_progress_line_stays_small(
    tmp_path: Path,
) -> None:
    log = TextLog(tmp_path, max_bytes=100_000_000)
    store = CaptureStore()
    execution = start_cell(store, "m1")
    file = log.file_for("folder/My Notebook.ipynb")
    chunk = ("x" * 99 + "\n") * 2_000  # 200 kB
    for _ in range(6):
        feed(log, store, execution, stream_msg("m1", chunk))
    # Over 1 MB rendered: written without waiting for a flush.
    assert file.read_text().count("x" * 99) >= 5000
    for i in range(100_000):
        log.feed(execution, stream_msg("m1", f"\r{i}/100000"))
    assert len(log._pending["m1"].line) < 20
    feed(log, store, execution, idle_msg("m1"))
    log.flush([execution])
    assert file.read_text().endswith("x\n99999/100000\n")


def test_rotation(tmp_path: Path) -> None:
    log = TextLog(tmp_path, max_bytes=200)
    store = CaptureStore()
    for i in range(10):
        execution = start_cell(store, f"m{i}")
        feed(log, store, execution, stream_msg(f"m{i}", "x" * 50 + "\n"))
        feed(log, store, execution, idle_msg(f"m{i}"))
        log.flush([execution])
    file = log.file_for("folder/My Notebook.ipynb")
    assert file.stat().st_size <= 200
    assert file.with_suffix(".log.1").stat().st_size <= 200


async def test_tail_follows_a_running_cell(
    jp_root_dir: Path, jp_data_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    code = (
        "import time\nfor i in range(30):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.1)"
    )
    make_notebook(jp_root_dir / "live.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("live.ipynb")
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await client.execute(code, cell_id="c")
    await client.wait_for_output(msg_id, "tick 3")
    logs = jp_data_dir / "jupyter_persist" / "logs"
    log_file = capture.recorder.text_log.file_for("live.ipynb")
    assert log_file.parent == logs
    assert stat.S_IMODE(os.stat(logs).st_mode) == 0o700
    # Followed live, while the cell still runs and a client is attached.
    await wait_for(
        lambda: log_file.exists() and "tick 5\n" in log_file.read_text(), what="live log"
    )
    assert "tick 29" not in log_file.read_text()
    assert textlog_threads()  # written by the log's thread, not on the event loop
    await client.wait_idle(msg_id)
    client.close()
    expected = "".join(f"tick {i}\n" for i in range(30))
    await wait_for(lambda: log_file.read_text().endswith(expected), what="the whole run logged")


def textlog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "jupyter-persist-textlog"]


def log_a_few_runs(log: TextLog, runs: int = 20) -> None:
    store = CaptureStore()
    for i in range(runs):
        execution = start_cell(store, f"m{i}")
        feed(log, store, execution, stream_msg(f"m{i}", f"run {i}\n" + "y" * 300_000 + "\n"))
        feed(log, store, execution, idle_msg(f"m{i}"))
        log.flush([execution])


def without_times(text: str) -> str:
    return re.sub(r"=== .* In \[", "=== In [", text)


def test_in_a_thread_the_same_text_is_written_in_order(tmp_path: Path) -> None:
    """The server's log is written by a thread of its own: same files, same order."""
    at_once, in_thread = (
        TextLog(tmp_path / "a", 2_000_000),
        TextLog(tmp_path / "b", 2_000_000, True),
    )
    writers: set[str] = set()
    append = in_thread._append

    def noting_the_thread(notebook_path: str, text: str) -> None:
        writers.add(threading.current_thread().name)
        append(notebook_path, text)

    in_thread._append = noting_the_thread  # type: ignore[method-assign]
    for log in (at_once, in_thread):
        log.directory.mkdir()
        log_a_few_runs(log)
    assert in_thread.wait(30)
    assert writers == {"jupyter-persist-textlog"}
    name = "folder/My Notebook.ipynb"
    for suffix in (".log", ".log.1"):  # rotated alike
        written = in_thread.file_for(name).with_suffix(suffix).read_text()
        assert without_times(written) == without_times(
            at_once.file_for(name).with_suffix(suffix).read_text()
        )
    in_thread.close()
    assert textlog_threads() == []


def test_a_disk_slower_than_the_output_holds_the_caller_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``QUEUED_CHARS`` waiting for the thread, the caller waits: nothing is dropped."""
    monkeypatch.setattr(textlog, "QUEUED_CHARS", 1000)
    log = TextLog(tmp_path, 10_000_000, in_thread=True)
    disk = threading.Event()
    append = log._append

    def slow_disk(notebook_path: str, text: str) -> None:
        disk.wait(30)
        append(notebook_path, text)

    log._append = slow_disk  # type: ignore[method-assign]
    log._write("nb.ipynb", "a" * 600 + "\n")
    log._write("nb.ipynb", "b" * 600 + "\n")  # 1,202 queued now
    caller = threading.Thread(target=log._write, args=("nb.ipynb", "c\n"))
    caller.start()
    caller.join(0.5)
    assert caller.is_alive()  # held back
    assert not log.wait(0.1)
    disk.set()
    caller.join(10)
    assert not caller.is_alive()
    assert log.wait(10)
    lines = log.file_for("nb.ipynb").read_text().splitlines()[1:]
    assert lines == ["a" * 600, "b" * 600, "c"]
    log.close()


def test_an_error_in_the_thread_is_logged_and_writing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = TextLog(tmp_path, 10_000_000, in_thread=True)
    append = log._append
    failed = False

    def failing_once(notebook_path: str, text: str) -> None:
        nonlocal failed
        if not failed:
            failed = True
            raise RuntimeError("unexpected")
        append(notebook_path, text)

    log._append = failing_once  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        log._write("nb.ipynb", "lost\n")
        log._write("nb.ipynb", "written\n")
        assert log.wait(10)
    assert "error writing the text log" in caplog.text
    assert log.file_for("nb.ipynb").read_text().endswith("\nwritten\n")
    log.close()
