"""The frontend extension in real JupyterLab and Notebook 7: a page reopened mid-run.

Without it, a page reopened while a cell runs shows that cell as ``[ ]`` with no output
for the rest of the run (``test_browser_save_guard.py`` runs that case with the frontend
turned off). With it, the page shows everything captured so far and keeps updating,
with the running prompt, and its own save writes every line once.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from browser import (
    PYTHON3_KERNELSPEC,
    LabServer,
    chromium,
    jupyter_server_process,
    lab_dialogs,
    lab_open_notebook,
    lab_run_all_cells,
    lab_run_then_close_mid_run,
    lab_wait_kernel_idle,
    lab_wait_output,
    report_failure,
    wait_until,
)
from helpers import make_notebook, stream_text
from playwright.sync_api import Page
from test_browser_notebook7 import notebook7_open, notebook7_wait_kernel_ready
from test_browser_save_guard import (
    CELL_ID,
    disk_cell,
    is_complete,
    lab_save,
    printed,
    printer_source,
    tab_cell,
    text_lines,
)

pytestmark = pytest.mark.browser

INDICATOR = ".jp-persist-Indicator"
FOLLOWS_LOG = "jupyter_persist: a page follows {name}"

PROGRESS_SOURCE = (
    "import time\n"
    "from IPython.display import clear_output\n"
    "for i in range(120):\n"
    "    clear_output(wait=True)\n"
    '    print(f"progress {i}", flush=True)\n'
    "    time.sleep(0.15)\n"
    'print("DONE", flush=True)\n'
)


def prompt(page: Page) -> str:
    return page.locator(".jp-Cell .jp-InputPrompt").first.inner_text().strip()


def indicator(page: Page) -> str:
    return page.locator(INDICATOR).first.inner_text().strip()


def reopen(page: Page, server: LabServer, name: str) -> None:
    lab_open_notebook(page, server, name, workspace=f"reopen-{uuid.uuid4().hex[:12]}")


def test_lab_reopened_mid_run_shows_everything_and_keeps_updating(tmp_path: Path) -> None:
    lines = printed(200)
    with jupyter_server_process(tmp_path, save_interval=1) as server:
        name = "live.ipynb"
        nb_path = server.root_dir / name
        make_notebook(
            nb_path, [(CELL_ID, printer_source(200, "0.1"))], kernelspec=PYTHON3_KERNELSPEC
        )
        lab_run_then_close_mid_run(server, name)

        with chromium() as session, report_failure(server, session):
            page = session.page
            reopen(page, server, name)
            # The earlier output, in its cell, with the running prompt.
            lab_wait_output(page, "line 0")
            wait_until(lambda: prompt(page) == "[*]:", 20, "the running prompt", 0.2)
            first = text_lines(tab_cell(page, name))
            assert "DONE" not in first, "the run ended before the page could follow it"
            assert first == lines[: len(first)], first
            wait_until(lambda: indicator(page) == "Outputs kept · 1 running", 10, "indicator")
            tooltip = page.locator(INDICATOR).first.get_attribute("title") or ""
            assert "1 running cell" in tooltip, tooltip
            assert page.locator(INDICATOR).first.get_attribute("role") == "status"

            # It keeps updating, in the same cell, until the end.
            wait_until(
                lambda: len(text_lines(tab_cell(page, name))) > len(first) + 10,
                30,
                "more lines while the page is open",
                0.2,
            )
            lab_wait_kernel_idle(page, name)
            wait_until(lambda: "DONE" in stream_text(tab_cell(page, name)), 60, "DONE", 0.25)
            cell = tab_cell(page, name)
            assert text_lines(cell) == lines, text_lines(cell)[-5:]
            assert len(cell["outputs"]) == 1
            shown = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert "\n".join(shown).strip().split("\n") == lines, shown[-1][-200:]
            wait_until(lambda: prompt(page) == "[1]:", 10, "the final prompt", 0.2)
            wait_until(lambda: indicator(page) == "Outputs kept", 10, "indicator idle")

            # The page saves: every line once, no "File Changed".
            seen = lab_save(page, name)
            assert seen == [], seen
            saved = disk_cell(nb_path)
            assert is_complete(saved, lines), text_lines(saved)[-5:]
            assert saved["execution_count"] == 1
            assert not lab_dialogs(page)
        assert FOLLOWS_LOG.format(name=name) in server.log()


def test_lab_reopened_progress_display_keeps_working(tmp_path: Path) -> None:
    """``clear_output(wait=True)`` progress: one line that changes, across the reopen."""
    with jupyter_server_process(tmp_path, save_interval=1) as server:
        name = "progress.ipynb"
        nb_path = server.root_dir / name
        make_notebook(nb_path, [(CELL_ID, PROGRESS_SOURCE)], kernelspec=PYTHON3_KERNELSPEC)
        lab_run_then_close_mid_run(server, name, wait_text="progress 5")

        with chromium() as session, report_failure(server, session):
            page = session.page
            reopen(page, server, name)
            lab_wait_output(page, "progress")
            seen: set[str] = set()

            def progress_shown() -> bool:
                text = stream_text(tab_cell(page, name))
                if "DONE" in text:
                    return True
                assert re.fullmatch(r"progress \d+\n", text), text
                seen.add(text)
                return False

            wait_until(progress_shown, 60, "the end of the progress display", 0.2)
            assert len(seen) >= 3, f"the display did not update on the page: {seen}"
            assert stream_text(tab_cell(page, name)) == "progress 119\nDONE\n"
            shown = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert "\n".join(shown).split() == ["progress", "119", "DONE"], shown
            lab_wait_kernel_idle(page, name)
            assert lab_save(page, name) == []
        cell = disk_cell(nb_path)
        assert stream_text(cell) == "progress 119\nDONE\n"
        assert len(cell["outputs"]) == 1


def test_lab_reopened_after_the_run_shows_the_final_state(tmp_path: Path) -> None:
    lines = printed(60)
    with jupyter_server_process(tmp_path, save_interval=1) as server:
        name = "after.ipynb"
        nb_path = server.root_dir / name
        make_notebook(
            nb_path, [(CELL_ID, printer_source(60, "0.1"))], kernelspec=PYTHON3_KERNELSPEC
        )
        lab_run_then_close_mid_run(server, name)
        wait_until(lambda: is_complete(disk_cell(nb_path), lines), 60, "the run on disk", 0.25)

        with chromium() as session, report_failure(server, session):
            page = session.page
            reopen(page, server, name)
            lab_wait_kernel_idle(page, name)
            lab_wait_output(page, "DONE")
            wait_until(lambda: indicator(page) == "Outputs kept", 10, "indicator")
            assert text_lines(tab_cell(page, name)) == lines
            assert prompt(page) == "[1]:"
            assert not lab_dialogs(page)


def test_notebook7_reopened_mid_run_shows_everything(tmp_path: Path) -> None:
    lines = printed(200)
    with jupyter_server_process(tmp_path, app="notebook", save_interval=1) as server:
        name = "live7.ipynb"
        nb_path = server.root_dir / name
        make_notebook(
            nb_path, [(CELL_ID, printer_source(200, "0.1"))], kernelspec=PYTHON3_KERNELSPEC
        )
        with chromium() as session, report_failure(server, session):
            page = session.page
            notebook7_open(page, server, name)
            notebook7_wait_kernel_ready(page, name)
            lab_run_all_cells(page)
            lab_wait_output(page, "line 5")

        with chromium() as session, report_failure(server, session):
            page = session.page
            notebook7_open(page, server, name)
            lab_wait_output(page, "line 0")
            wait_until(lambda: prompt(page) == "[*]:", 20, "the running prompt", 0.2)
            assert "DONE" not in stream_text(tab_cell(page, name))
            notebook7_wait_kernel_ready(page, name)
            wait_until(lambda: "DONE" in stream_text(tab_cell(page, name)), 60, "DONE", 0.25)
            assert text_lines(tab_cell(page, name)) == lines
            wait_until(lambda: prompt(page) == "[1]:", 10, "the final prompt", 0.2)
            assert lab_save(page, name) == []
        assert is_complete(disk_cell(nb_path), lines)
