"""A tqdm.auto progress bar (ipywidgets 8 in JupyterLab 4) outlives the page that drew it.

Closed mid-run, the run ends with no page open and its kernel is shut down: reopened, the
bar is drawn from the widget state the server wrote (at 100 %, no "model not found").
Reopened mid-run with the kernel alive, the page gets the live widgets from the kernel
(as soon as the kernel can answer the widget manager) and the bar ends at 100 %; the
server's state in the file does not fight the live one.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from browser import (
    PYTHON3_KERNELSPEC,
    LabServer,
    chromium,
    jupyter_server_process,
    lab_kernel_state,
    lab_open_notebook,
    lab_run_all_cells,
    lab_wait_kernel_idle,
    report_failure,
    wait_until,
)
from helpers import make_notebook
from playwright.sync_api import Page

from jupyter_persist.model.widgets import STATE_MIME

pytestmark = pytest.mark.browser

CELL_ID = "bar"
NAME = "bar.ipynb"
STEPS = 60
TQDM_LOOP = (
    "import time\n"
    "from tqdm.auto import tqdm\n"
    f"for i in tqdm(range({STEPS}), desc='Work'):\n"
    "    time.sleep(0.25)\n"
)
THREAD_LOOP = (
    "import threading, time\n"
    "from tqdm.auto import tqdm\n"
    "def work():\n"
    f"    for i in tqdm(range({STEPS}), desc='Work'):\n"
    "        time.sleep(0.25)\n"
    "threading.Thread(target=work).start()\n"
)
BAR = ".jp-OutputArea-output .widget-hprogress"
MODEL_NOT_FOUND = "model not found"


def finished_on_disk(path: Path) -> bool:
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    state = notebook.get("metadata", {}).get("widgets", {}).get(STATE_MIME, {}).get("state", {})
    bars = [m["state"] for m in state.values() if m.get("model_name") == "FloatProgressModel"]
    return len(bars) == 1 and bars[0].get("value") == STEPS


def bar_text(page: Page) -> str:
    """The text row of the bar: description and percentage, then count, times and rate."""
    boxes = page.locator(".jp-OutputArea-output .widget-hbox")
    return " ".join(boxes.first.all_inner_texts()) if boxes.count() else ""


def bar_width(page: Page) -> float:
    """How full the drawn bar is, in percent of its track."""
    width: float = page.evaluate(
        """(selector) => {
            const track = document.querySelector(selector + ' .progress');
            const bar = document.querySelector(selector + ' .progress-bar');
            if (!track || !bar) { return -1; }
            return 100 * bar.getBoundingClientRect().width / track.getBoundingClientRect().width;
        }""",
        BAR,
    )
    return width


def shut_down_kernels(server: LabServer) -> None:
    for kernel in server.api("kernels"):
        request = urllib.request.Request(
            f"{server.base_url}api/kernels/{kernel['id']}",
            method="DELETE",
            headers={"Authorization": f"token {server.token}"},
        )
        urllib.request.urlopen(request, timeout=10).close()
    wait_until(lambda: server.api("kernels") == [], 30, "no kernel left")


def start_the_bar(page: Page, server: LabServer, name: str) -> None:
    lab_open_notebook(page, server, name)
    lab_wait_kernel_idle(page, name)
    lab_run_all_cells(page)
    page.locator(BAR).first.wait_for(timeout=60_000)
    wait_until(lambda: f"/{STEPS}" in bar_text(page), 30, "the bar's count shown")
    assert f"{STEPS}/{STEPS}" not in bar_text(page), "the loop ended before the page left"


def wait_bar_full(page: Page) -> None:
    wait_until(lambda: f"{STEPS}/{STEPS}" in bar_text(page), 60, f"{STEPS}/{STEPS} on the bar")
    wait_until(lambda: bar_width(page) > 99, 10, "the bar drawn full")
    assert "100%" in bar_text(page)


@contextmanager
def bar_left_mid_run(tmp_path: Path, code: str) -> Iterator[tuple[LabServer, Path]]:
    """A server whose page ran ``code`` and went away while the bar was under way."""
    with jupyter_server_process(tmp_path, save_interval=1) as server:
        nb_path = server.root_dir / NAME
        make_notebook(nb_path, [(CELL_ID, code)], kernelspec=PYTHON3_KERNELSPEC)
        with chromium() as session, report_failure(server, session):
            start_the_bar(session.page, server, NAME)
            session.close()  # mid-run
        yield server, nb_path


def test_a_bar_closed_mid_run_is_drawn_full_after_its_kernel_is_gone(tmp_path: Path) -> None:
    with bar_left_mid_run(tmp_path, TQDM_LOOP) as (server, nb_path):
        with report_failure(server):
            wait_until(lambda: finished_on_disk(nb_path), 60, "the finished bar on disk")
            shut_down_kernels(server)
            assert finished_on_disk(nb_path)

        # Reopened: a new kernel has none of these models; the page draws them from the file.
        with chromium() as session, report_failure(server, session):
            page = session.page
            lab_open_notebook(page, server, NAME)
            lab_wait_kernel_idle(page, NAME)
            page.locator(BAR).first.wait_for(timeout=30_000)
            wait_bar_full(page)
            assert "Work" in bar_text(page)
            assert MODEL_NOT_FOUND not in page.locator(".jp-Notebook").inner_text().lower()


@contextmanager
def reopen_mid_run(tmp_path: Path, code: str) -> Iterator[Page]:
    """Run ``code`` in a page that goes away mid-run; yield a page reopened meanwhile."""
    with bar_left_mid_run(tmp_path, code) as (server, nb_path):
        with chromium() as session, report_failure(server, session):
            # The server wrote the bar meanwhile: the page opens on that file.
            wait_until(lambda: STATE_MIME in nb_path.read_text(encoding="utf-8"), 30, "state")
            lab_open_notebook(session.page, server, NAME)
            yield session.page
            wait_bar_full(session.page)
            page_text = session.page.locator(".jp-Notebook").inner_text().lower()
            assert MODEL_NOT_FOUND not in page_text
            # The page's widgets are the kernel's own, connected, not the file's copies.
            disconnected = session.page.evaluate(
                "() => document.querySelectorAll('.jupyter-widgets-disconnected').length"
            )
            assert disconnected == 0
        with report_failure(server):
            wait_until(lambda: finished_on_disk(nb_path), 60, "the finished bar on disk")


def assert_bar_moves(page: Page) -> None:
    page.locator(BAR).first.wait_for(timeout=30_000)
    seen: list[str] = []
    wait_until(lambda: seen.append(bar_text(page)) or len(set(seen)) >= 3, 30, "the bar moving")
    assert f"{STEPS}/{STEPS}" not in seen[0], seen


def test_a_bar_reopened_while_its_kernel_is_idle_is_live_and_ends_full(tmp_path: Path) -> None:
    """A bar driven by a thread (the cell has ended): the kernel answers the page itself."""
    with reopen_mid_run(tmp_path, THREAD_LOOP) as page:
        assert_bar_moves(page)


def test_a_bar_reopened_while_its_cell_runs_is_live_and_ends_full(tmp_path: Path) -> None:
    """The running cell draws the bar: the server answers the page for the busy kernel.

    Without that, JupyterLab's widget manager waits for the cell's end (its
    ``request_states`` and ``comm_info_request`` are shell requests) and the view says
    "Loading widget..." until then.
    """
    with reopen_mid_run(tmp_path, TQDM_LOOP) as page:
        assert_bar_moves(page)
        # The page still sees the kernel busy with the cell (the server's answers end so).
        state = lab_kernel_state(page, NAME)
        assert state is not None
        assert state["status"] == "busy", state
