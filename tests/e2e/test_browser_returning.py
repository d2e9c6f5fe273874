"""A tab that comes back after its connection was cut saves with no "File Changed" dialog.

Real JupyterLab and Notebook 7 in headless Chromium. Mid-run the tab's network goes and its
websockets are cut, as a sleeping laptop or a dropped Wi-Fi does; the extension writes the
rest of the run into the file meanwhile. Back online, the tab's Ctrl+S must save with no
dialog, and the file must hold every line once, the count, and the user's edits, including
one typed while offline. With the frontend extension off, and in nbclassic, the client's
own dialog comes, and its "Overwrite" button keeps everything (the save guard gives the
outputs back).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser import (
    PYTHON3_KERNELSPEC,
    BrowserSession,
    LabServer,
    chromium,
    jupyter_server_process,
    lab_open_notebook,
    lab_wait_kernel_idle,
    lab_wait_output,
    read_cells_retrying,
    report_failure,
    wait_until,
)
from helpers import make_notebook
from playwright.sync_api import Page
from test_browser_live import FOLLOWS_LOG
from test_browser_nbclassic import nbclassic_open
from test_browser_notebook7 import notebook7_open, notebook7_wait_kernel_ready
from test_browser_save_guard import (
    CELL_ID,
    FILE_CHANGED,
    RECORD_WEBSOCKETS,
    describe,
    disk_cell,
    is_complete,
    kernel_connected,
    lab_save,
    printed,
    printer_source,
    tab_cell,
    text_lines,
)

pytestmark = pytest.mark.browser

LINES = 40
OTHER_ID = "other"
OTHER_SOURCE = "x = 1"
EDIT = "  # edited while offline"
TAKES_LOG = "jupyter_persist: a tab of {name} takes the file as we wrote it"

# Closes the page's open websockets (the kernel's; with ``all``, every one: the follow
# socket too) with a code JupyterLab takes for a lost connection.
CLOSE_SOCKETS = """(all) => {
    const open = (window.__testSockets || []).filter(ws => ws.readyState === WebSocket.OPEN
        && (all || ws.url.includes('/api/kernels/')));
    for (const ws of open) { ws.close(4000, 'test: connection lost'); }
    return open.map(ws => ws.url.split('?')[0]);
}"""


@dataclass
class Returning:
    server: LabServer
    session: BrowserSession
    name: str

    @property
    def page(self) -> Page:
        return self.session.page

    @property
    def path(self) -> Path:
        return self.server.root_dir / self.name


def notebook(server: LabServer, name: str) -> None:
    make_notebook(
        server.root_dir / name,
        [(CELL_ID, printer_source(LINES, "0.25")), (OTHER_ID, OTHER_SOURCE)],
        kernelspec=PYTHON3_KERNELSPEC,
    )


@contextmanager
def running_tab(tmp_path: Path, app: str = "lab", lab_frontend: bool = True) -> Iterator[Returning]:
    """A page with the notebook open, its printer cell running (and nothing else)."""
    with jupyter_server_process(tmp_path, app=app, lab_frontend=lab_frontend) as server:
        name = "offline.ipynb"
        notebook(server, name)
        with chromium() as session, report_failure(server, session):
            page = session.page
            page.add_init_script(RECORD_WEBSOCKETS)
            if app == "lab":
                lab_open_notebook(page, server, name)
                lab_wait_kernel_idle(page, name)
            else:
                notebook7_open(page, server, name)
                notebook7_wait_kernel_ready(page, name)
            if lab_frontend:
                server.wait_for_log(FOLLOWS_LOG.format(name=name))
            # Run the first cell only (Ctrl+Enter in it), as a user runs one cell.
            page.locator(".jp-Cell .cm-content").first.click()
            page.keyboard.press("Control+Enter")
            lab_wait_output(page, "line 3")
            yield Returning(server, session, name)


def go_away(tab: Returning, every_socket: bool = False) -> None:
    """The tab's network goes and its websockets are cut (both ends see it)."""
    tab.session.context.set_offline(True)
    closed = tab.page.evaluate(CLOSE_SOCKETS, every_socket)
    assert any("/api/kernels/" in url for url in closed), f"websockets closed: {closed}"
    tab.server.wait_for_log("Starting buffering")


def written_while_away(tab: Returning) -> None:
    """The extension writes the whole run into the file while the tab is away."""
    lines = printed(LINES)
    wait_until(lambda: is_complete(disk_cell(tab.path), lines), 60, "the run on disk", 0.25)


def edit_other_cell(tab: Returning) -> None:
    """Type at the end of the other cell's source, as a user does."""
    editor = tab.page.locator(".jp-Cell .cm-content").nth(1)
    editor.click()
    tab.page.keyboard.press("Control+End")
    tab.page.keyboard.type(EDIT)
    tab.page.keyboard.press("Escape")


def come_back(tab: Returning) -> None:
    """Back online: JupyterLab reconnects its kernel and the server replays the rest."""
    tab.session.context.set_offline(False)
    wait_until(kernel_connected(tab.page, tab.name), 90, "the kernel connection back", 0.5)
    wait_until(
        lambda: "DONE" in text_lines(tab_cell(tab.page, tab.name)), 30, "the replayed run", 0.5
    )


def other_source(tab: Returning) -> str:
    cell = read_cells_retrying(tab.path)[OTHER_ID]
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else str(source)


def assert_saved_everything(tab: Returning, edited: bool) -> None:
    cell = disk_cell(tab.path)
    assert is_complete(cell, printed(LINES)), f"after the save: {describe(cell)}"
    assert cell["execution_count"] == 1, describe(cell)
    assert other_source(tab) == OTHER_SOURCE + (EDIT if edited else "")


def save_without_dialog(tab: Returning) -> None:
    seen = lab_save(tab.page, tab.name)
    assert not any(FILE_CHANGED in text for text in seen), f"dialogs of the save: {seen}"
    assert TAKES_LOG.format(name=tab.name) in tab.server.log()


def away_and_back(
    tab: Returning, edit: bool, every_socket: bool = False, offline_ms: float = 0
) -> None:
    """Cut off mid-run (an edit typed meanwhile), the run written, then back online."""
    go_away(tab, every_socket)
    if offline_ms:
        tab.page.wait_for_timeout(offline_ms)
    if edit:
        edit_other_cell(tab)
    written_while_away(tab)
    come_back(tab)


def test_lab_tab_cut_off_mid_run_saves_without_a_dialog(tmp_path: Path) -> None:
    with running_tab(tmp_path) as tab:
        away_and_back(tab, edit=False)
        save_without_dialog(tab)
        assert_saved_everything(tab, edited=False)


def test_lab_edit_typed_offline_is_saved_without_a_dialog(tmp_path: Path) -> None:
    with running_tab(tmp_path) as tab:
        away_and_back(tab, edit=True)
        save_without_dialog(tab)
        assert_saved_everything(tab, edited=True)


def test_lab_laptop_sleep_30_s_saves_without_a_dialog(tmp_path: Path) -> None:
    """No network at all for 30 s (every socket cut), then back."""
    with running_tab(tmp_path) as tab:
        away_and_back(tab, edit=False, every_socket=True, offline_ms=30_000)
        save_without_dialog(tab)
        assert_saved_everything(tab, edited=False)


def test_notebook7_tab_cut_off_mid_run_saves_without_a_dialog(tmp_path: Path) -> None:
    with running_tab(tmp_path, app="notebook") as tab:
        away_and_back(tab, edit=True)
        save_without_dialog(tab)
        assert_saved_everything(tab, edited=True)


def test_lab_tab_that_stayed_sees_no_dialog(tmp_path: Path) -> None:
    """Attached the whole run: the server leaves the file to the tab."""
    with running_tab(tmp_path) as tab:
        before = tab.path.stat().st_mtime_ns
        wait_until(lambda: "DONE" in text_lines(tab_cell(tab.page, tab.name)), 60, "the run")
        assert tab.path.stat().st_mtime_ns == before, "the server wrote an attached tab's file"
        seen = lab_save(tab.page, tab.name)
        assert not any(FILE_CHANGED in text for text in seen), f"dialogs of the save: {seen}"
        assert_saved_everything(tab, edited=False)


def test_lab_without_the_frontend_overwrite_keeps_everything(tmp_path: Path) -> None:
    """JupyterLab's own dialog remains; "Overwrite" keeps the edit and every output."""
    with running_tab(tmp_path, lab_frontend=False) as tab:
        away_and_back(tab, edit=True)
        seen = lab_save(tab.page, tab.name)  # answers the dialog with "Overwrite"
        assert any(FILE_CHANGED in text for text in seen), f"dialogs of the save: {seen}"
        assert_saved_everything(tab, edited=True)


def test_nbclassic_overwrite_keeps_everything(tmp_path: Path) -> None:
    """nbclassic has no frontend extension: its "Notebook changed" dialog comes, and
    "Overwrite" keeps the edit typed offline and every line (the save guard)."""
    with jupyter_server_process(tmp_path, app="nbclassic") as server:
        name = "classic.ipynb"
        notebook(server, name)
        with chromium() as session, report_failure(server, session):
            tab = Returning(server, session, name)
            page = session.page
            page.add_init_script(RECORD_WEBSOCKETS)
            nbclassic_open(page, server, name)
            page.locator(".cell .CodeMirror").first.click()
            page.keyboard.press("Control+Enter")
            page.locator(".output_area", has_text="line 3").first.wait_for()

            go_away(tab)
            written_while_away(tab)
            # nbclassic says "Connection failed" in a modal; the user closes it.
            failed = page.locator(".modal-dialog", has_text="Connection failed")
            failed.locator("button", has_text="OK").click()
            failed.wait_for(state="hidden")
            page.locator(".cell .CodeMirror").nth(1).click()
            page.keyboard.press("Control+End")
            page.keyboard.type(EDIT)
            page.keyboard.press("Escape")

            session.context.set_offline(False)
            page.locator(".output_area", has_text="DONE").first.wait_for(timeout=90_000)
            with page.expect_response(
                lambda r: r.request.method == "PUT" and f"/api/contents/{name}" in r.url,
                timeout=30_000,
            ) as saved:
                page.keyboard.press("Control+s")
                dialog = page.locator(".modal-dialog", has_text="Notebook changed")
                dialog.wait_for()
                dialog.locator("button", has_text="Overwrite").click()
            assert saved.value.ok, f"the save answered {saved.value.status}"
            assert_saved_everything(tab, edited=True)
