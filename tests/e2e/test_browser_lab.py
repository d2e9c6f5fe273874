"""Real JupyterLab in headless Chromium: the browser goes away, the outputs still land on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import (
    PYTHON3_KERNELSPEC,
    SLOW_PRINTER_OUTPUT,
    chromium,
    jupyter_server_process,
    lab_dialogs,
    lab_open_notebook,
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

pytestmark = pytest.mark.browser

CELL_ID = "slow-printer"


def test_lab_closed_mid_run_keeps_outputs(tmp_path: Path) -> None:
    with jupyter_server_process(tmp_path, save_interval=1) as server:
        name = "closed_mid_run.ipynb"
        nb_path = server.root_dir / name
        make_notebook(nb_path, [(CELL_ID, slow_printer())], kernelspec=PYTHON3_KERNELSPEC)

        with chromium() as session, report_failure(server, session):
            page = session.page
            lab_open_notebook(page, server, name)
            lab_wait_kernel_idle(page, name)
            lab_run_all_cells(page)
            lab_wait_output(page, "line 5")

            # The premise: the run is still going and nothing of it is on disk yet (the
            # editor owns the file while attached, and JupyterLab autosaves only every 120 s).
            shown = lab_outputs_text(page)
            assert "DONE" not in shown, "the cell finished before the browser closed"
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
            lab_open_notebook(page, server, name)
            lab_wait_kernel_idle(page, name)
            shown = lab_outputs_text(page)
            assert shown.strip() == SLOW_PRINTER_OUTPUT.strip(), shown[-200:]
            prompt = page.locator(".jp-InputArea-prompt").first.inner_text()
            assert prompt.strip() == "[1]:", prompt
