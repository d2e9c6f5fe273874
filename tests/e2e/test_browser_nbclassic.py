"""Real nbclassic in headless Chromium: a client that sends no cell id.

nbclassic's execute requests carry no ``cellId``, so the extension places the outputs in
the one cell whose source is the code that ran (the source fallback).
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
    read_cells_retrying,
    report_failure,
    slow_printer,
    wait_complete_on_disk,
)
from helpers import make_notebook
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

CELL_ID = "slow-printer"


def nbclassic_open(page: Page, server: LabServer, path: str) -> None:
    """Open nbclassic's notebook page; wait until its kernel is idle."""
    page.goto(server.url(f"nbclassic/notebooks/{urllib.parse.quote(path)}"))
    page.locator("#notebook .cell").first.wait_for()
    page.locator("#kernel_indicator_icon.kernel_idle_icon").wait_for(timeout=60_000)


def nbclassic_outputs(page: Page) -> str:
    return "\n".join(page.locator(".output_area .output_subarea").all_inner_texts())


def test_nbclassic_closed_mid_run_keeps_outputs(tmp_path: Path) -> None:
    with jupyter_server_process(tmp_path, app="nbclassic", save_interval=1) as server:
        name = "classic.ipynb"
        nb_path = server.root_dir / name
        make_notebook(
            nb_path,
            [(CELL_ID, slow_printer()), ("other", "x = 1")],
            kernelspec=PYTHON3_KERNELSPEC,
        )

        with chromium() as session, report_failure(server, session):
            page = session.page
            nbclassic_open(page, server, name)
            page.locator("#celllink").click()  # the Cell menu
            page.locator("#run_all_cells").click()
            page.locator(".output_area", has_text="line 5").first.wait_for()
            assert "DONE" not in nbclassic_outputs(page), "the cell finished before the close"
            prompt = page.locator(".input_prompt").first.inner_text()
            assert "*" in prompt, f"the cell is not shown running: {prompt!r}"
            assert read_cells_retrying(nb_path)[CELL_ID]["outputs"] == []
            session.close()

        with report_failure(server):
            wait_complete_on_disk(nb_path, CELL_ID, SLOW_PRINTER_OUTPUT)
            cells = read_cells_retrying(nb_path)
            assert "".join(cells["other"]["source"]) == "x = 1"
            assert cells["other"]["outputs"] == []
            log = server.log()
            assert f"jupyter_persist: wrote {name}" in log
            assert "sent no cell id" not in log  # placed by its source, not left unplaced

        with chromium() as session, report_failure(server, session):
            page = session.page
            nbclassic_open(page, server, name)
            assert nbclassic_outputs(page).strip() == SLOW_PRINTER_OUTPUT.strip()
            prompt = page.locator(".input_prompt").first.inner_text()
            assert prompt.replace("\xa0", " ").strip() == "In [1]:", prompt
