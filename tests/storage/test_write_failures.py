"""A disk that refuses writes: one WARNING each, outputs kept, everything written once it works."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import make_notebook, read_cells, run_and_leave, stream_text, wait_for
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

from jupyter_persist.storage.journal import fold

#: Prints, then runs until the test interrupts it (the journal stays while it runs).
CODE = (
    "import time\nprint('start', flush=True)\ntime.sleep(2)\n"
    "print('middle', flush=True)\ntime.sleep(120)"
)


class FailingSaves(AsyncLargeFileManager):
    """The server's own ContentsManager, whose notebook saves fail while ``failing``."""

    failing = False

    async def _save_notebook(
        self, os_path: str, nb: Any, capture_validation_error: Any = None
    ) -> None:
        if FailingSaves.failing:
            raise OSError(errno.ENOSPC, "No space left on device", os_path)
        await super()._save_notebook(os_path, nb, capture_validation_error)


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_persist": True},
            "contents_manager_class": FailingSaves,
        },
        "PersistExtension": {"save_interval": 0.2, "journal_interval": 0.2},
    }


def ours(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.getMessage().startswith("jupyter_persist:")
        and r.levelno == level
        and text in r.getMessage()
    ]


def outputs_text(execution: Any) -> str:
    return stream_text({"outputs": execution.area.to_json()})


def no_traceback_of_ours(caplog: pytest.LogCaptureFixture) -> None:
    assert not [
        r for r in caplog.records if r.getMessage().startswith("jupyter_persist:") and r.exc_info
    ]


async def test_a_notebook_that_cannot_be_saved_is_saved_once_it_can(
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nb_path = jp_root_dir / "full.ipynb"
    make_notebook(nb_path, [("c", CODE)])
    _, kernel_id = await notebook_session(nb_path.name)
    FailingSaves.failing = True
    try:
        msg_id = await run_and_leave(jp_ws_fetch, kernel_id, CODE, "c")
        execution = capture.store.get(msg_id)
        await wait_for(lambda: ours(caplog, logging.WARNING, "cannot save full.ipynb"))
        # Tried at every 0.2 s tick through the second output: still one WARNING.
        await wait_for(lambda: "middle" in outputs_text(execution))
        await asyncio.sleep(1)
        assert len(ours(caplog, logging.WARNING, "cannot save full.ipynb")) == 1
        assert read_cells(nb_path)["c"]["outputs"] == []
        assert (await capture.flusher.flush("full.ipynb")) == "save failed"
    finally:
        FailingSaves.failing = False
    await wait_for(lambda: "middle" in stream_text(read_cells(nb_path)["c"]), what="the save")
    assert stream_text(read_cells(nb_path)["c"]) == "start\nmiddle\n"
    no_traceback_of_ours(caplog)
    await jp_fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")
    await wait_for(lambda: not execution.running, what="the interrupted cell")


async def test_a_journal_that_cannot_be_written_is_rewritten_whole_once_it_can(
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nb_path = jp_root_dir / "journaled.ipynb"
    make_notebook(nb_path, [("c", CODE)])
    _, kernel_id = await notebook_session(nb_path.name)
    journal = capture.recorder.journal
    file = journal.file_for(nb_path.name)

    def journaled_text() -> str:
        if not file.is_file():
            return ""
        cells = fold(journal.read(file)).values()
        return "".join(stream_text({"outputs": cell.outputs}) for cell in cells)

    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, CODE, "c")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: journaled_text() == "start\n", what="the first record")
    # A directory where the journal was: every append fails, as on a full disk.
    file.unlink()
    file.mkdir()
    await wait_for(lambda: ours(caplog, logging.WARNING, "cannot write the crash journal"))
    assert "middle" in outputs_text(execution)
    await asyncio.sleep(1)  # appends tried again at every 0.2 s tick
    assert len(ours(caplog, logging.WARNING, "cannot write the crash journal")) == 1
    file.rmdir()
    # The record of "middle" was lost: the next one must not be a diff against it.
    await wait_for(lambda: journaled_text() == "start\nmiddle\n", what="the journal rewritten")
    assert ours(caplog, logging.INFO, "the crash journal can be written again")
    no_traceback_of_ours(caplog)
    await jp_fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")
    await wait_for(lambda: not execution.running, what="the interrupted cell")
