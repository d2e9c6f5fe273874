"""Real Notebook 7 in headless Chromium: the browser goes away, the outputs still land on disk.

The same scenario as ``test_browser_lab.py``, driven through ``jupyter notebook`` (Notebook 7),
whose single-document page is built from JupyterLab's components.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from browser import (
    PYTHON3_KERNELSPEC,
    SLOW_PRINTER_OUTPUT,
    LabServer,
    chromium,
    jupyter_server_process,
    lab_dialogs,
    lab_kernel_state,
    lab_outputs_text,
    lab_run_all_cells,
    lab_wait_kernel_idle,
    lab_wait_output,
    read_cells_retrying,
    report_failure,
    slow_printer,
    wait_complete_on_disk,
)
from helpers import make_notebook
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

CELL_ID = "slow-printer"


def notebook7_open(page: Page, server: LabServer, path: str) -> None:
    """Open ``/notebooks/<path>``, Notebook 7's page for one notebook, and wait for its cells."""
    page.goto(server.url(f"notebooks/{urllib.parse.quote(path)}"))
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()


def notebook7_wait_kernel_ready(page: Page, path: str, timeout_ms: float = 60_000) -> None:
    """Wait until the page's notebook kernel is connected and idle, as the page shows it.

    Notebook 7's shell has one main widget (the notebook), and ``currentWidget`` and
    ``widgets('main')`` work as in JupyterLab, so the session context is read the same way
    (:func:`browser.lab_wait_kernel_idle`). The page agrees: the toolbar's execution
    indicator says idle and the "Kernel Initializing"/"Kernel Connecting" notice is gone.
    """
    lab_wait_kernel_idle(page, path, timeout_ms)
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.jp-NotebookKernelStatus'))"
        ".every(e => e.textContent.trim() === '')",
        timeout=timeout_ms,
    )


def test_notebook7_closed_mid_run_keeps_outputs(tmp_path: Path) -> None:
    with jupyter_server_process(tmp_path, app="notebook", save_interval=1) as server:
        name = "closed_mid_run.ipynb"
        nb_path = server.root_dir / name
        make_notebook(nb_path, [(CELL_ID, slow_printer())], kernelspec=PYTHON3_KERNELSPEC)

        with chromium() as session, report_failure(server, session):
            page = session.page
            notebook7_open(page, server, name)
            notebook7_wait_kernel_ready(page, name)
            state = lab_kernel_state(page, name)
            assert state is not None
            assert state["id"] in {k["id"] for k in server.api("kernels")}, state

            lab_run_all_cells(page)  # Notebook 7 has the same menu bar: Run > Run All Cells
            lab_wait_output(page, "line 5")

            # The premise: the run is still going and nothing of it is on disk yet (the
            # editor owns the file while attached, and Notebook 7 autosaves only every 120 s).
            shown = lab_outputs_text(page)
            assert "DONE" not in shown, "the cell finished before the browser closed"
            prompt = page.locator(".jp-Cell .jp-InputPrompt").first.inner_text()
            assert "*" in prompt, f"the cell is not shown running: {prompt!r}"
            assert not lab_dialogs(page), lab_dialogs(page)
            cell = read_cells_retrying(nb_path)[CELL_ID]
            assert cell["outputs"] == [], cell["outputs"]
            assert cell["execution_count"] is None

            session.close()  # every websocket of the page goes away mid-run

        with report_failure(server):
            wait_complete_on_disk(nb_path, CELL_ID, SLOW_PRINTER_OUTPUT)

            log = server.log()
            assert "jupyter_persist: last client left kernel" in log
            assert f"jupyter_persist: wrote {name}" in log

        # Reopened after the run: the page shows every line, with the cell's prompt.
        with chromium() as session, report_failure(server, session):
            page = session.page
            notebook7_open(page, server, name)
            notebook7_wait_kernel_ready(page, name)
            shown = lab_outputs_text(page)
            assert shown.strip() == SLOW_PRINTER_OUTPUT.strip(), shown[-200:]
            prompt = page.locator(".jp-Cell .jp-InputPrompt").first.inner_text()
            assert prompt.strip() == "[1]:", prompt
