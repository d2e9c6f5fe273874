"""``jupyter persist``: status, log, show, restore, clean — run as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import (
    idle_msg,
    make_notebook,
    read_cells,
    run_and_leave,
    stream_msg,
    stream_text,
    wait_for,
)

from jupyter_persist.model.store import CaptureStore
from jupyter_persist.storage.journal import Journal
from jupyter_persist.storage.textlog import TextLog

SUBCOMMANDS = ["status", "log", "show", "restore", "clean"]


@pytest.fixture
def state_dir(jp_environ: Any) -> Path:
    """Where the extension and the CLI keep their state in these tests (jp_environ's data dir)."""
    return Path(os.environ["JUPYTER_DATA_DIR"]) / "jupyter_persist"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``jupyter persist ARGS`` (no server in the test's event loop to answer)."""
    return subprocess.run(
        [sys.executable, "-m", "jupyter_persist.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


async def cli_async(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run ``jupyter persist ARGS`` while the test's server keeps answering."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jupyter_persist.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert text in errors[0]


def journal_a_run(state_dir: Path, api_path: str, cell_id: str, lines: list[str]) -> Path:
    """Write the journal a server would have left, capturing ``lines`` printed by a cell."""
    store = CaptureStore()
    execution = store.begin("kernel", "msg-1")
    store.place(execution, api_path, cell_id)
    for line in lines:
        store.apply(stream_msg("msg-1", line + "\n"), detached=True)
    journal = Journal(state_dir / "journals")
    journal.ensure_directory()
    journal.append([execution])
    return journal.file_for(api_path)


def log_a_run(state_dir: Path, api_path: str, lines: list[str]) -> Path:
    store = CaptureStore()
    execution = store.begin("kernel", "msg-1")
    store.place(execution, api_path, "c")
    log = TextLog(state_dir / "logs", max_bytes=1_000_000)
    log.ensure_directory()
    for line in lines:
        log.feed(execution, stream_msg("msg-1", line + "\n"))
    store.apply(idle_msg("msg-1"), detached=True)
    log.flush([execution])
    return log.file_for(api_path)


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_each_subcommand_has_help(subcommand: str, jp_environ: Any) -> None:
    result = cli(subcommand, "--help")
    assert result.returncode == 0, result.stderr
    assert f"jupyter persist {subcommand}" in result.stdout


def test_the_jupyter_command_finds_it(jp_environ: Any) -> None:
    """Installed as the console script ``jupyter-persist``, so ``jupyter persist`` runs it."""
    jupyter = shutil.which("jupyter", path=os.path.dirname(sys.executable)) or "jupyter"
    result = subprocess.run(
        [jupyter, "persist", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in SUBCOMMANDS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no subcommand given"),
        (("bogus",), "unknown subcommand 'bogus'"),
        (("show",), "expected one NOTEBOOK argument"),
        (("show", "missing.ipynb"), "missing.ipynb does not exist"),
        (("log", "missing.ipynb"), "no text log for missing.ipynb"),
        (("restore", "missing.ipynb"), "no journal for missing.ipynb"),
        (("clean", "--older-than=-1"), "--older-than must be 0 or more days"),
        (("clean", "--older-than", "abc"), "expected a float, not the str 'abc'"),
        (("show", "--bogus", "x.ipynb"), "unknown option --bogus"),
        (("status", "--PersistExtension.save_interval=0"), "save_interval must be > 0"),
    ],
)
def test_errors_are_one_line(args: tuple[str, ...], message: str, jp_environ: Any) -> None:
    assert_one_line_error(cli(*args), message)


def test_status_without_a_server_shows_journals(state_dir: Path, tmp_path: Path) -> None:
    journal_a_run(state_dir, "work/train.ipynb", "c", ["epoch 1"])
    result = cli("status")
    assert result.returncode == 0, result.stderr
    assert "No Jupyter server is running." in result.stdout
    assert "work/train.ipynb" in result.stdout
    report = json.loads(cli("status", "--json").stdout)
    assert report["servers"] == []
    assert report["journals"][0]["notebooks"] == ["work/train.ipynb"]


async def run_long_cell_detached(
    jp_serverapp: Any, jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any
) -> tuple[str, str]:
    """Cell ``slow`` of run.ipynb runs, its client gone, on a server the CLI can find.

    Returns (kernel id, msg id). The cell sleeps long enough to outlast several CLI
    runs on a slow machine (4 s did not, once): end it with :func:`interrupt`.
    """
    jp_serverapp.write_server_info_file()
    code = "import time\nprint('start', flush=True)\ntime.sleep(120)"
    make_notebook(jp_root_dir / "run.ipynb", [("slow", code)])
    _, kernel_id = await notebook_session("run.ipynb")
    return kernel_id, await run_and_leave(jp_ws_fetch, kernel_id, code, "slow")


async def interrupt(jp_fetch: Any, capture: Any, kernel_id: str, msg_id: str) -> None:
    await jp_fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")
    # Once over and written, the server's run is let go of (a record of it stays).
    await wait_for(
        lambda: (execution := capture.store.get(msg_id)) is None or not execution.running,
        what="the interrupted cell",
    )


async def test_status_of_a_running_server(
    jp_serverapp: Any,
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
) -> None:
    kernel_id, msg_id = await run_long_cell_detached(
        jp_serverapp, jp_root_dir, jp_ws_fetch, notebook_session
    )
    await wait_for(lambda: capture.store.get(msg_id).placed and not capture.clients.any(kernel_id))
    await wait_for(lambda: "run.ipynb" in capture.flusher.last_written, what="the first write")

    code_, out, err = await cli_async("status")
    assert code_ == 0, err
    assert f"Server {jp_serverapp.connection_url}" in out
    assert "run.ipynb: kernel " in out
    assert "busy, no client attached" in out
    assert "running: cell slow" in out
    assert "; 6 characters captured, 6 bytes held in memory; last write " in out  # "start\n"
    assert re.search(r"last write \d+ (s|min) ago; 0 execution\(s\) not written yet", out)
    loop_line = (
        r"event loop: [\d.]+ s in the extension "
        r"\(longest block \d+ ms, \d+ ms of it CPU\); [\d,]+ IOPub"
    )
    assert re.search(loop_line, out)
    assert re.search(r"memory: [\d,]+ trim\(s\) gave \d+ MB the server freed back", out)
    assert "; glibc thresholds: mmap 32 MB, top trim 8 MB" in out
    code_, out, _ = await cli_async("status", "--json")
    [server] = json.loads(out)["servers"]
    assert server["status"]["notebooks"][0]["running_cells"] == ["slow"]
    await interrupt(jp_fetch, capture, kernel_id, msg_id)


class TestServerWithoutTheExtension:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return {"ServerApp": {"jpserver_extensions": {"jupyter_persist": False}}}

    async def test_status_says_so(self, jp_serverapp: Any, jp_fetch: Any) -> None:
        # (jp_fetch's fixtures make the server listen on its port.)
        assert not jp_serverapp.extension_manager.extension_apps.get("jupyter_persist")
        assert "jupyter_persist_capture" not in jp_serverapp.web_app.settings
        jp_serverapp.write_server_info_file()
        code_, out, err = await cli_async("status")
        assert code_ == 0, err
        assert f"Server {jp_serverapp.connection_url}" in out
        assert "  jupyter_persist is not enabled on this server" in out


async def test_restore_and_clean_leave_a_notebook_being_captured_alone(
    jp_serverapp: Any,
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
) -> None:
    kernel_id, msg_id = await run_long_cell_detached(
        jp_serverapp, jp_root_dir, jp_ws_fetch, notebook_session
    )
    journal = capture.recorder.journal.file_for("run.ipynb")
    await wait_for(journal.exists, what="the journal")

    code_, _, err = await cli_async("restore", "run.ipynb", cwd=jp_root_dir)
    assert code_ == 1
    assert "run.ipynb is being captured by the server at" in err
    assert "Traceback" not in err
    old = time.time() - 40 * 86400
    os.utime(journal, (old, old))  # old enough to go, if it were not in use
    code_, out, err = await cli_async(
        "clean", "--root-dir", str(jp_root_dir), "--older-than", "30", "--yes"
    )
    assert code_ == 0, err
    assert "Removed 0 file(s)" in out
    assert journal.exists()
    await interrupt(jp_fetch, capture, kernel_id, msg_id)


async def test_log_follows_a_running_cell(
    jp_serverapp: Any,
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
) -> None:
    jp_serverapp.write_server_info_file()
    code = (
        "import time\nfor i in range(8):\n    print(f'tick {i}', flush=True)\n"
        "    time.sleep(0.5)\nprint('DONE')"
    )
    make_notebook(jp_root_dir / "sub" / "live.ipynb", [("c", code)])
    _, kernel_id = await notebook_session("sub/live.ipynb")
    await run_and_leave(jp_ws_fetch, kernel_id, code, "c", wait_text="tick 0")
    log_file = capture.recorder.text_log.file_for("sub/live.ipynb")
    await wait_for(log_file.exists, what="the text log")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jupyter_persist.cli",
        "log",
        "-f",
        "live.ipynb",
        stdout=asyncio.subprocess.PIPE,
        cwd=jp_root_dir / "sub",
    )
    assert process.stdout is not None
    seen = ""
    try:
        while "DONE" not in seen:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, "the log ended before DONE"
            seen += line.decode()
    finally:
        process.kill()
        await process.wait()
    assert seen.startswith("# jupyter-persist text log of sub/live.ipynb\n")
    body = seen.split("===\n", 1)[1]
    assert body == "".join(f"tick {i}\n" for i in range(8)) + "DONE\n"


async def test_log_follows_across_a_rotation(state_dir: Path, tmp_path: Path) -> None:
    log_file = log_a_run(state_dir, "train.ipynb", ["before"])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jupyter_persist.cli",
        "log",
        "-f",
        "--LogApp.poll_interval=0.1",
        "train.ipynb",
        stdout=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None

    async def read_until(text: str) -> str:
        assert process.stdout is not None
        seen = ""
        while text not in seen:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, f"the log ended before {text!r}"
            seen += line.decode()
        return seen

    try:
        await read_until("before\n")
        # As the server rotates: renamed aside, a new file started, here already longer
        # than what was read of the old one.
        log_file.rename(log_file.with_name(log_file.name + ".1"))
        log_file.write_text("".join(f"after {i}\n" for i in range(100)))
        seen = await read_until("after 99\n")
    finally:
        process.kill()
        await process.wait()
    assert seen == "".join(f"after {i}\n" for i in range(100))


def test_log_prints_the_whole_log(state_dir: Path, tmp_path: Path) -> None:
    log_a_run(state_dir, "notes/a.ipynb", ["one", "two"])
    (tmp_path / "notes").mkdir()
    result = cli("log", "a.ipynb", cwd=tmp_path / "notes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("===\none\ntwo\n")


def test_show_merges_a_newer_journal(state_dir: Path, tmp_path: Path) -> None:
    notebook = tmp_path / "proj" / "train.ipynb"
    make_notebook(notebook, [("a", "print('epoch 1')"), ("b", "1 + 1")])
    os.utime(notebook, (time.time() - 60, time.time() - 60))  # saved before the run
    journal = journal_a_run(state_dir, "proj/train.ipynb", "a", ["epoch 1", "epoch 2"])
    result = cli("show", str(notebook))
    assert result.returncode == 0, result.stderr
    assert f"Reading {journal} (" in result.stderr  # progress on stderr, outputs on stdout
    assert "merged with the journal" in result.stdout
    assert "── cell 1 · In [ ] · print('epoch 1')\nepoch 1\nepoch 2\n" in result.stdout
    assert "── cell 2" in result.stdout

    only = cli("show", str(notebook), "--cell", "2")
    assert "── cell 1" not in only.stdout
    assert "── cell 2" in only.stdout
    assert cli("show", str(notebook), "--cell", "b").stdout == only.stdout
    assert_one_line_error(cli("show", str(notebook), "--cell", "9"), "the notebook has 2 cells")


def test_show_leaves_out_a_journal_older_than_the_file(state_dir: Path, tmp_path: Path) -> None:
    notebook = tmp_path / "train.ipynb"
    journal = journal_a_run(state_dir, "train.ipynb", "a", ["old run"])
    nb = make_notebook(notebook, [("a", "print('new')")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="new run\n")]
    nbformat.write(nb, str(notebook))
    os.utime(notebook, (time.time() + 60, time.time() + 60))  # saved after the journal
    result = cli("show", "train.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"(the journal {journal} is older than the file: not shown)" in result.stdout
    assert "new run" in result.stdout
    assert "old run" not in result.stdout


def test_show_refuses_a_corrupt_notebook(tmp_path: Path, jp_environ: Any) -> None:
    notebook = tmp_path / "broken.ipynb"
    notebook.write_text('{"cells": [')
    assert_one_line_error(cli("show", str(notebook)), "is not a readable notebook")


def test_restore_merges_outputs_and_removes_the_journal(state_dir: Path, tmp_path: Path) -> None:
    notebook = tmp_path / "train.ipynb"
    make_notebook(notebook, [("a", "for e in range(2): print('epoch', e)"), ("b", "x = 1")])
    os.utime(notebook, (time.time() - 60, time.time() - 60))
    before = read_cells(notebook)
    journal = journal_a_run(state_dir, str(notebook.relative_to("/")), "a", ["epoch 0"])

    result = cli("restore", str(notebook))
    assert result.returncode == 0, result.stderr
    assert "Restored 1 cell(s)" in result.stdout
    after = read_cells(notebook)
    assert stream_text(after["a"]) == "epoch 0\n"
    assert after["a"]["source"] == before["a"]["source"]
    assert after["b"] == before["b"]
    assert not journal.exists()


def test_restore_to_a_copy_keeps_the_original_and_the_journal(
    state_dir: Path, tmp_path: Path
) -> None:
    notebook = tmp_path / "train.ipynb"
    make_notebook(notebook, [("a", "print(1)")])
    original = notebook.read_bytes()
    journal = journal_a_run(state_dir, "train.ipynb", "a", ["1"])
    result = cli("restore", "train.ipynb", "--to", "copy.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stream_text(read_cells(tmp_path / "copy.ipynb")["a"]) == "1\n"
    assert notebook.read_bytes() == original
    assert journal.exists()
    again = cli("restore", "train.ipynb", "--to", "copy.ipynb", cwd=tmp_path)
    assert_one_line_error(again, "copy.ipynb exists; add --force")


def test_restore_to_a_folder_that_does_not_exist(state_dir: Path, tmp_path: Path) -> None:
    make_notebook(tmp_path / "train.ipynb", [("a", "print(1)")])
    journal = journal_a_run(state_dir, "train.ipynb", "a", ["1"])
    target = tmp_path / "missing" / "copy.ipynb"
    result = cli("restore", "train.ipynb", "--to", str(target), cwd=tmp_path)
    assert_one_line_error(result, f"No such file or directory: {target}")
    assert journal.exists()


def test_restore_refuses_a_corrupt_notebook(state_dir: Path, tmp_path: Path) -> None:
    notebook = tmp_path / "train.ipynb"
    notebook.write_text("not json")
    journal = journal_a_run(state_dir, "train.ipynb", "a", ["1"])
    assert_one_line_error(cli("restore", "train.ipynb", cwd=tmp_path), "not a readable notebook")
    assert notebook.read_text() == "not json"
    assert journal.exists()


def test_restore_refuses_to_undo_later_changes(state_dir: Path, tmp_path: Path) -> None:
    notebook = tmp_path / "train.ipynb"
    journal = journal_a_run(state_dir, "train.ipynb", "a", ["old run"])
    make_notebook(notebook, [("a", "print(1)")])
    os.utime(notebook, (time.time() + 60, time.time() + 60))  # saved after the journal
    original = notebook.read_bytes()
    result = cli("restore", "train.ipynb", cwd=tmp_path)
    assert_one_line_error(result, "was saved after the journal's last record")
    assert notebook.read_bytes() == original
    forced = cli("restore", "train.ipynb", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert stream_text(read_cells(notebook)["a"]) == "old run\n"
    assert not journal.exists()


def test_clean_is_a_dry_run_until_yes(state_dir: Path, tmp_path: Path) -> None:
    make_notebook(tmp_path / "kept.ipynb", [("a", "")])
    kept = journal_a_run(state_dir, "kept.ipynb", "a", ["x"])
    gone = journal_a_run(state_dir, "deleted.ipynb", "a", ["x"])
    kept_log = log_a_run(state_dir, "kept.ipynb", ["x"])
    gone_log = log_a_run(state_dir, "deleted.ipynb", ["x"])

    dry = cli("clean", "--root-dir", str(tmp_path))
    assert dry.returncode == 0, dry.stderr
    assert f"Checking 2 journal(s) in {state_dir / 'journals'}..." in dry.stderr
    assert f"would remove {gone}: journal; deleted.ipynb no longer exists" in dry.stdout
    assert f"would remove {gone_log}: text log; deleted.ipynb no longer exists" in dry.stdout
    assert str(kept) not in dry.stdout
    assert str(kept_log) not in dry.stdout
    assert "Nothing was deleted" in dry.stdout
    assert gone.exists()
    assert gone_log.exists()

    done = cli("clean", "--root-dir", str(tmp_path), "--yes")
    assert done.returncode == 0, done.stderr
    assert not gone.exists()
    assert not gone_log.exists()
    assert kept.exists()
    assert kept_log.exists()

    old = time.time() - 40 * 86400
    os.utime(kept, (old, old))
    aged = cli("clean", "--root-dir", str(tmp_path), "--older-than", "30", "--yes")
    assert "not modified for 40 days" in aged.stdout
    assert not kept.exists()
    assert kept_log.exists()
