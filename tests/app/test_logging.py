"""The server log: what an admin reads, and per-message DEBUG only when it is printed."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import make_notebook, run_and_leave, wait_for

from jupyter_persist.logs import OnceWarnings, debug_logged


def test_debug_logged_follows_the_handlers() -> None:
    logger = logging.getLogger("test-debug-logged")
    logger.propagate = False
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        # jupyter_server's set-up: the logger at DEBUG, its handler at INFO.
        logger.setLevel(logging.DEBUG)
        handler.setLevel(logging.INFO)
        assert not debug_logged(logger)
        handler.setLevel(logging.DEBUG)
        assert debug_logged(logger)
        logger.setLevel(logging.INFO)
        assert not debug_logged(logger)
    finally:
        logger.removeHandler(handler)


def test_a_warning_is_logged_once_per_notebook_and_topic_until_it_clears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test-once-warnings")
    warnings = OnceWarnings(logger)
    with caplog.at_level(logging.WARNING, logger="test-once-warnings"):
        for _ in range(3):
            warnings.warn("a.ipynb", "file", "disk full")
        warnings.warn("b.ipynb", "file", "disk full")
        warnings.warn("a.ipynb", "room", "disk full")
        warnings.warn("a.ipynb", "file", "quota")  # a new reason is news
        warnings.clear("a.ipynb", "file")
        warnings.warn("a.ipynb", "file", "quota")  # failing again after a success
        warnings.missing_cells("a.ipynb", "cells", {"c2", "c1"}, "no longer exist")
        warnings.missing_cells("a.ipynb", "cells", {"c2", "c1"}, "no longer exist")
        warnings.missing_cells("a.ipynb", "cells", set(), "no longer exist")
        warnings.missing_cells("a.ipynb", "cells", {"c1", "c2"}, "no longer exist")
    messages = [record.getMessage() for record in caplog.records]
    cells = (
        "jupyter_persist: 2 cell(s) of a.ipynb no longer exist (c1, c2); "
        "their outputs are kept in memory"
    )
    assert messages == ["disk full", "disk full", "disk full", "quota", "quota", cells, cells]


async def test_the_server_log_tells_an_admin_what_happens(
    jp_fetch: Any,
    jp_ws_fetch: Any,
    jp_root_dir: Path,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Notebook captured, each write, notebook released; DEBUG per message.

    (The start line is checked by every test that runs a real server process:
    ``browser.jupyter_server_process`` waits for it.)
    """
    make_notebook(jp_root_dir / "logged.ipynb", [("c", "print('hello')")])
    _, kernel_id = await notebook_session("logged.ipynb")
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, "print('hello')", "c", wait_text="hello")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.running and not execution.dirty, timeout=30)
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    await wait_for(lambda: kernel_id not in capture.listener.kernel_ids, timeout=30)

    ours = [r for r in caplog.records if r.getMessage().startswith("jupyter_persist:")]
    info = [r.getMessage() for r in ours if r.levelno == logging.INFO]
    assert f"jupyter_persist: capturing outputs of logged.ipynb (kernel {kernel_id})" in info
    assert any(
        re.fullmatch(r"jupyter_persist: wrote logged\.ipynb \(1 cell\(s\), \d+ bytes, \d+ ms\)", m)
        for m in info
    )
    assert (
        f"jupyter_persist: stopped capturing logged.ipynb (its kernel {kernel_id} stopped)" in info
    )
    debug = [r.getMessage() for r in ours if r.levelno == logging.DEBUG]
    assert f"jupyter_persist: stream for {msg_id} (kernel {kernel_id})" in debug
    assert not [r for r in ours if r.levelno >= logging.WARNING]
    assert not [r for r in ours if r.exc_info]
