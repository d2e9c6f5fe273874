"""JupyterLab with real-time collaboration on (jupyter-collaboration installed).

The server runs from ``.ci/rtc/venv`` (``bash .ci/run`` creates it): installed in the
main test environment, jupyter-collaboration would turn RTC on for every other test.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from browser import (
    PYTHON3_KERNELSPEC,
    SLOW_PRINTER_OUTPUT,
    chromium,
    jupyter_server_process,
    lab_open_notebook,
    lab_outputs_text,
    lab_run_all_cells,
    lab_run_then_close_mid_run,
    lab_wait_kernel_idle,
    lab_wait_output,
    read_cells_retrying,
    report_failure,
    slow_printer,
    wait_complete_on_disk,
    wait_until,
)
from helpers import REPO, make_notebook, stream_text
from test_browser_save_guard import CLOSE_KERNEL_SOCKETS, RECORD_WEBSOCKETS, TAB_CELL

pytestmark = [pytest.mark.browser, pytest.mark.rtc]

RTC_PYTHON = REPO / ".ci" / "rtc" / "venv" / "bin" / "python"
CELL_ID = "slow-printer"
ROOM_WRITE_LOG = "into its collaboration room"
REPLAY_SKIP_LOG = "out of the replay; the collaboration room holds those outputs"
# What the room logs when the file changed behind its back (it then reloads cells whole).
OUT_OF_BAND = "Out-of-band changes"
EDIT = "# edited while offline"

# The source of a cell as the tab holds it.
TAB_SOURCE = """([path, cellId]) => {
    const widget = Array.from(window.jupyterapp.shell.widgets('main'))
        .find(w => w.context && w.context.path === path);
    const cell = widget?.context.model.toJSON().cells.find(c => c.id === cellId);
    return cell ? (Array.isArray(cell.source) ? cell.source.join('') : cell.source) : null;
}"""


@pytest.fixture
def rtc_python() -> str:
    assert RTC_PYTHON.exists(), (
        f"{RTC_PYTHON} is missing: bash .ci/run creates it (.ci/rtc/requirements.txt)"
    )
    return str(RTC_PYTHON)


def test_rtc_closed_mid_run_then_reopened(tmp_path: Path, rtc_python: str) -> None:
    with jupyter_server_process(tmp_path, save_interval=1, python=rtc_python) as server:
        name = "shared.ipynb"
        nb_path = server.root_dir / name
        make_notebook(nb_path, [(CELL_ID, slow_printer())], kernelspec=PYTHON3_KERNELSPEC)

        with chromium() as session, report_failure(server, session):
            page = session.page
            lab_open_notebook(page, server, name)
            lab_wait_kernel_idle(page, name)
            # The premise: the page edits the notebook through a shared document room.
            server.wait_for_log("Content in room")
            lab_run_all_cells(page)
            lab_wait_output(page, "line 5")
            shown = lab_outputs_text(page)
            assert "DONE" not in shown, "the cell finished before the browser closed"
            session.close()

        with report_failure(server):
            # The outputs go into the open room, and the room saves them.
            server.wait_for_log(ROOM_WRITE_LOG.format(name=name))
            wait_complete_on_disk(nb_path, CELL_ID, SLOW_PRINTER_OUTPUT)
            assert "Saving the content from room" in server.log()
            assert OUT_OF_BAND not in server.log()

        with chromium() as session, report_failure(server, session):
            page = session.page
            lab_open_notebook(page, server, name)
            lab_wait_kernel_idle(page, name)

            wait_until(
                lambda: "DONE" in lab_outputs_text(page), 30, "the outputs in the reopened page"
            )
            # Each line once: the room's copy and the file's are not both shown.
            shown = lab_outputs_text(page)
            assert shown.strip() == SLOW_PRINTER_OUTPUT.strip(), shown[-300:]
            prompt = page.locator(".jp-InputArea-prompt").first.inner_text()
            assert prompt.strip() == "[1]:", prompt  # not stuck as running ([*])
        # The room may save again once the page is gone: still everything, once.
        assert read_cells_retrying(nb_path)[CELL_ID]["execution_count"] == 1
        wait_complete_on_disk(nb_path, CELL_ID, SLOW_PRINTER_OUTPUT)


def test_rtc_two_tabs_show_each_output_once(tmp_path: Path, rtc_python: str) -> None:
    """Two tabs on one notebook: the one that runs the cell owns its outputs; no doubles."""
    with jupyter_server_process(tmp_path, save_interval=1, python=rtc_python) as server:
        name = "two_tabs.ipynb"
        nb_path = server.root_dir / name
        make_notebook(nb_path, [(CELL_ID, slow_printer())], kernelspec=PYTHON3_KERNELSPEC)

        with chromium() as session, report_failure(server, session):
            first, second = session.page, session.context.new_page()
            for page in (first, second):
                lab_open_notebook(page, server, name)
                lab_wait_kernel_idle(page, name)
            lab_run_all_cells(first)

            for page in (first, second):
                wait_until(
                    lambda p=page: "DONE" in lab_outputs_text(p), 60, "the whole run in each tab"
                )
                shown = lab_outputs_text(page)
                assert shown.strip() == SLOW_PRINTER_OUTPUT.strip(), shown[-300:]
            # While the tabs are attached, the extension leaves the file to them.
            assert "jupyter_persist: wrote" not in server.log()
            session.close()

        with report_failure(server):
            # Saved by the room (or by the extension once both tabs are gone), once.
            wait_complete_on_disk(nb_path, CELL_ID, SLOW_PRINTER_OUTPUT)


def test_rtc_tab_offline_mid_run_comes_back(tmp_path: Path, rtc_python: str) -> None:
    """The connection drops mid-run and comes back: nothing lost, nothing twice."""
    with jupyter_server_process(tmp_path, save_interval=1, python=rtc_python) as server:
        name = "offline.ipynb"
        nb_path = server.root_dir / name
        make_notebook(nb_path, [(CELL_ID, slow_printer())], kernelspec=PYTHON3_KERNELSPEC)
        with chromium() as session, report_failure(server, session):
            page = session.page
            page.add_init_script(RECORD_WEBSOCKETS)
            lab_open_notebook(page, server, name)
            lab_wait_kernel_idle(page, name)
            server.wait_for_log("Content in room")
            lab_run_all_cells(page)
            lab_wait_output(page, "line 3")
            session.context.set_offline(True)
            page.wait_for_timeout(1000)
            assert len(page.evaluate(CLOSE_KERNEL_SOCKETS)) == 1
            server.wait_for_log("Starting buffering")
            wait_complete_on_disk(nb_path, CELL_ID, SLOW_PRINTER_OUTPUT)
            session.context.set_offline(False)

            def tab_text() -> str:
                return stream_text(page.evaluate(TAB_CELL, [name, CELL_ID]) or {})

            wait_until(lambda: "DONE" in tab_text(), 60, "the tab back with the whole run", 0.5)
            page.wait_for_timeout(3000)  # let the room and the tab settle
            assert tab_text() == SLOW_PRINTER_OUTPUT, tab_text()[-300:]
            # The premise of "once": the server replayed what the kernel sent meanwhile,
            # without the outputs the room already gave the tab.
            assert "buffered messages" in server.log()
            assert REPLAY_SKIP_LOG in server.log()
        wait_complete_on_disk(nb_path, CELL_ID, SLOW_PRINTER_OUTPUT)
        assert OUT_OF_BAND not in server.log()


def disk_source(path: Path) -> str:
    source = read_cells_retrying(path)[CELL_ID]["source"]
    return "".join(source) if isinstance(source, list) else source


def test_rtc_source_edited_offline_is_kept(tmp_path: Path, rtc_python: str) -> None:
    """A tab edits the running cell while offline: its edit and every output both stay."""
    with jupyter_server_process(tmp_path, save_interval=1, python=rtc_python) as server:
        name = "edited.ipynb"
        nb_path = server.root_dir / name
        make_notebook(nb_path, [(CELL_ID, slow_printer())], kernelspec=PYTHON3_KERNELSPEC)
        with chromium() as session, report_failure(server, session):
            page = session.page
            page.add_init_script(RECORD_WEBSOCKETS)
            lab_open_notebook(page, server, name)
            lab_wait_kernel_idle(page, name)
            server.wait_for_log("Content in room")
            lab_run_all_cells(page)
            lab_wait_output(page, "line 3")
            session.context.set_offline(True)
            page.wait_for_timeout(1000)
            assert len(page.evaluate(CLOSE_KERNEL_SOCKETS)) == 1
            server.wait_for_log("Starting buffering")

            # Offline, the user edits the cell that is still running.
            page.locator(".jp-Cell .jp-InputArea-editor .cm-content").first.click()
            page.keyboard.press("Control+Home")
            page.keyboard.type(EDIT)
            page.keyboard.press("Enter")
            page.keyboard.press("Escape")
            source = page.evaluate(TAB_SOURCE, [name, CELL_ID])
            assert source.startswith(EDIT + "\n"), source
            # Meanwhile the run ends; the room gets its outputs and saves them.
            wait_complete_on_disk(nb_path, CELL_ID, SLOW_PRINTER_OUTPUT)
            assert disk_source(nb_path) == slow_printer()
            session.context.set_offline(False)

            def tab_text() -> str:
                return stream_text(page.evaluate(TAB_CELL, [name, CELL_ID]) or {})

            wait_until(lambda: "DONE" in tab_text(), 60, "the tab back with the whole run", 0.5)
            page.wait_for_timeout(3000)  # let the room and the tab settle
            assert tab_text() == SLOW_PRINTER_OUTPUT, tab_text()[-300:]
            assert page.evaluate(TAB_SOURCE, [name, CELL_ID]) == EDIT + "\n" + slow_printer()
            # The room saves the merge: the edit and the whole run, once.
            wait_until(
                lambda: disk_source(nb_path).startswith(EDIT),
                30,
                "the offline edit saved",
            )
        cell = read_cells_retrying(nb_path)[CELL_ID]
        assert disk_source(nb_path) == EDIT + "\n" + slow_printer()
        assert stream_text(cell) == SLOW_PRINTER_OUTPUT
        assert cell["execution_count"] == 1
        assert OUT_OF_BAND not in server.log()


def test_rtc_reopened_mid_run_keeps_updating(tmp_path: Path, rtc_python: str) -> None:
    """Reopened while the cell runs: the room gets the outputs whose own tab has gone.

    The reopened tab is attached to the kernel, but the run is not its own: without
    writing the room, it would show nothing new until the run ends. The frontend
    extension leaves the outputs to the room (no doubles).
    """
    lines = 200
    expected = "".join(f"line {i}\n" for i in range(lines)) + "DONE\n"
    with jupyter_server_process(tmp_path, save_interval=1, python=rtc_python) as server:
        name = "reopened.ipynb"
        nb_path = server.root_dir / name
        make_notebook(nb_path, [(CELL_ID, slow_printer(lines))], kernelspec=PYTHON3_KERNELSPEC)
        lab_run_then_close_mid_run(server, name, wait_log="Content in room")

        with chromium() as session, report_failure(server, session):
            page = session.page
            lab_open_notebook(page, server, name, workspace=f"reopen-{uuid.uuid4().hex[:12]}")
            lab_wait_output(page, "line 0")
            first = lab_outputs_text(page)
            assert "DONE" not in first, "the run ended before the page was reopened"
            wait_until(
                lambda: len(lab_outputs_text(page)) > len(first) + 50,
                30,
                "more lines in the reopened page",
                0.2,
            )
            wait_until(lambda: "DONE" in lab_outputs_text(page), 60, "the end of the run", 0.5)
            page.wait_for_timeout(2000)  # let the room and the tab settle
            shown = lab_outputs_text(page)
            assert shown.strip() == expected.strip(), shown[-300:]
            prompt = page.locator(".jp-InputArea-prompt").first.inner_text()
            assert prompt.strip() == "[1]:", prompt
            assert "jupyter_persist: a page follows reopened.ipynb" in server.log()
        wait_complete_on_disk(nb_path, CELL_ID, expected)
