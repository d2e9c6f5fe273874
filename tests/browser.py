"""Harness for the browser tests: a real ``jupyter lab`` server and a headless Chromium page.

Used by the ``@pytest.mark.browser`` tests. Everything here is synchronous (playwright's sync
API), so those tests are plain ``def`` tests.

- :func:`jupyter_server_process` starts ``jupyter lab`` (or ``jupyter notebook``) in a
  subprocess with its own config, data and runtime folders, and yields a :class:`LabServer`.
- :func:`chromium` launches Debian's Chromium through playwright and yields a
  :class:`BrowserSession` whose browser can be closed mid-test (``session.close()``).
- The ``lab_*`` functions drive the JupyterLab UI.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import read_cells, stream_text
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXTENSION_LOADED = "jupyter_persist: capturing kernel outputs"
#: The name of the extension's JupyterLab frontend (``package.json``).
FRONTEND_EXTENSION = "jupyter-persist"
PYTHON3_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    A ``json.JSONDecodeError`` counts as "not yet": jupyter_server rewrites notebooks in
    place, so a reader can catch one half-written.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except json.JSONDecodeError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_cells_retrying(path: Path, timeout: float = 5) -> dict[str, Any]:
    """:func:`helpers.read_cells`, retrying while the file is half-written."""
    cells: dict[str, Any] = wait_until(lambda: read_cells(path), timeout, f"{path} to parse")
    return cells


#: Lines the slow printer prints, one every 0.1 s: long enough to close a browser mid-run.
SLOW_PRINTER_LINES = 80
#: What the slow printer's cell holds once it has run.
SLOW_PRINTER_OUTPUT = "".join(f"line {i}\n" for i in range(SLOW_PRINTER_LINES)) + "DONE\n"


def slow_printer(lines: int = SLOW_PRINTER_LINES) -> str:
    """The code of a cell that prints ``line 0``, ``line 1``... every 0.1 s, then ``DONE``."""
    return (
        "import time\n"
        f"for i in range({lines}):\n"
        '    print(f"line {i}", flush=True)\n'
        "    time.sleep(0.1)\n"
        'print("DONE", flush=True)\n'
    )


def wait_complete_on_disk(path: Path, cell_id: str, expected: str, timeout: float = 60) -> None:
    """Wait until the cell on disk holds ``expected`` and an execution count.

    On a timeout, the error says what the file holds instead.
    """

    def complete() -> bool:
        cell = read_cells_retrying(path)[cell_id]
        return stream_text(cell) == expected and isinstance(cell["execution_count"], int)

    try:
        wait_until(complete, timeout, "all outputs in the notebook on disk", interval=0.25)
    except AssertionError:
        cell = read_cells_retrying(path)[cell_id]
        raise AssertionError(
            f"outputs on disk: {stream_text(cell)!r}, execution_count {cell['execution_count']!r}"
        ) from None


@dataclass
class LabServer:
    """A running ``jupyter lab`` subprocess."""

    base_url: str  # ends with "/"
    token: str
    root_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def url(self, path: str = "", **params: str) -> str:
        """Absolute URL of ``path`` (relative to the base URL), with the token appended."""
        query = urllib.parse.urlencode({**params, "token": self.token})
        return f"{self.base_url}{path.lstrip('/')}?{query}"

    def api(self, path: str, timeout: float = 5) -> Any:
        """GET ``/api/<path>`` and return the decoded JSON."""
        request = urllib.request.Request(
            f"{self.base_url}api/{path.lstrip('/')}",
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def log(self) -> str:
        """Everything the server wrote to stdout/stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        """Wait until the server log contains ``text``."""
        try:
            wait_until(lambda: text in self.log(), timeout, f"{text!r} in the server log")
        except AssertionError as err:
            raise AssertionError(f"{err}\n--- server log tail ---\n{self.log_tail()}") from None


def _stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the server (it stops its kernels and flushes), SIGKILL its group on timeout."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    # Kill whatever is left of the process group (the server, or kernels it failed to stop).
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout)


@contextmanager
def jupyter_server_process(
    tmp_path: Path,
    app: str = "lab",  # or "notebook" (Notebook 7), "nbclassic"
    save_interval: float = 1,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 60,
    stop_timeout: float = 20,
    python: str = sys.executable,
    lab_frontend: bool = True,
    stdin: int = subprocess.DEVNULL,
) -> Iterator[LabServer]:
    """Run ``python -m jupyter <app>`` isolated under ``tmp_path``; yield a :class:`LabServer`.

    ``python`` may be another environment's interpreter (the one with real-time
    collaboration installed); its ``bin`` comes first on ``PATH``, since ``jupyter <app>``
    runs the ``jupyter-<app>`` it finds there.
    The notebooks live in ``tmp_path / "root"``, the server's output goes to
    ``tmp_path / "server.log"``. The environment's ``etc/jupyter`` still applies, which is
    what enables the installed extension; the server must have logged that the extension
    loaded before this yields (an extension that fails to import is only logged).
    ``lab_frontend=False`` turns the extension's JupyterLab frontend off in the pages
    (``disabledExtensions`` in the isolated ``labconfig/page_config.json``).
    ``stdin`` may be a terminal's descriptor (the server then asks before stopping at
    SIGINT, as when run in a terminal).
    """
    root_dir = tmp_path / "root"
    root_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for name, folder in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
    ):
        (tmp_path / folder).mkdir(exist_ok=True)
        env[name] = str(tmp_path / folder)
    if not lab_frontend:
        labconfig = tmp_path / "config" / "labconfig"
        labconfig.mkdir(parents=True, exist_ok=True)
        (labconfig / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {FRONTEND_EXTENSION: True}})
        )
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    port = free_port()
    token = uuid.uuid4().hex
    # nbclassic has no window.jupyterapp to expose.
    app_class = {"lab": "LabApp", "notebook": "JupyterNotebookApp"}.get(app)
    expose = [f"--{app_class}.expose_app_in_browser=True"] if app_class else []
    cmd = [
        python,
        "-m",
        "jupyter",
        app,
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        *expose,
        f"--PersistExtension.save_interval={save_interval}",
        *extra_args,
    ]
    log_path = tmp_path / "server.log"
    with ExitStack() as stack:
        log_file = stack.enter_context(log_path.open("wb"))
        process = subprocess.Popen(
            cmd,
            cwd=root_dir,
            env=env,
            stdin=stdin,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown reaches kernels too
        )
        stack.callback(_stop_process, process, stop_timeout)
        server = LabServer(f"http://127.0.0.1:{port}/", token, root_dir, log_path, process)

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited with {process.returncode}")
            try:
                server.api("status", timeout=2)
            except (OSError, urllib.error.URLError):
                return False
            return True

        try:
            wait_until(answers, startup_timeout, f"jupyter {app} to answer /api/status", 0.2)
        except (AssertionError, RuntimeError) as err:
            raise AssertionError(f"{err}\n--- server log tail ---\n{server.log_tail()}") from None
        assert EXTENSION_LOADED in server.log(), (
            "jupyter_persist did not load\n--- server log tail ---\n" + server.log_tail()
        )
        yield server


def start_session(base_url: str, token: str, path: str) -> str:
    """Start a notebook session on a server subprocess; return its kernel id."""
    body = json.dumps({"path": path, "type": "notebook", "name": "", "kernel": {"name": "python3"}})
    request = urllib.request.Request(
        f"{base_url}api/sessions",
        data=body.encode(),
        method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(json.loads(response.read())["kernel"]["id"])


class BrowserSession:
    """A headless Chromium with one context and one page; :meth:`close` is idempotent."""

    def __init__(self, playwright: Playwright, browser: Browser, context: BrowserContext) -> None:
        self.playwright = playwright
        self.browser = browser
        self.context = context
        self.page: Page = context.new_page()
        self.console: list[str] = []  # console messages and page errors, for failure reports
        self.page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        self.page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))
        self.closed = False

    def close(self) -> None:
        """Close the context and the browser: every websocket of the page goes away."""
        if self.closed:
            return
        self.closed = True
        try:
            self.context.close()
        finally:
            self.browser.close()


@contextmanager
def chromium(timeout_ms: float = 30_000) -> Iterator[BrowserSession]:
    """Launch Debian's Chromium headless through playwright; yield a :class:`BrowserSession`."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(timeout_ms)
            session = BrowserSession(playwright, browser, context)
        except BaseException:
            browser.close()
            raise
        try:
            yield session
        finally:
            session.close()


@contextmanager
def report_failure(server: LabServer, session: BrowserSession | None = None) -> Iterator[None]:
    """Re-raise any failure inside as an ``AssertionError`` that tells what happened.

    Attaches the tail of the server log, the page's last console messages and, while the
    browser is open, a screenshot saved next to the server log.
    """
    try:
        yield
    except Exception as err:
        details = [f"{type(err).__name__}: {err}", "--- server log tail ---", server.log_tail()]
        if session is not None:
            details += ["--- browser console (last 20) ---", *session.console[-20:]]
            if not session.closed:
                shot = server.log_path.with_name("failure.png")
                with suppress(Exception):
                    session.page.screenshot(path=str(shot))
                    details.append(f"screenshot: {shot}")
        raise AssertionError("\n".join(details)) from err


# -- JupyterLab ------------------------------------------------------------------------


def lab_open_notebook(page: Page, server: LabServer, path: str, workspace: str = "") -> None:
    """Open a notebook in a workspace of its own (else the last page's tabs come back)."""
    workspace = workspace or f"test-{uuid.uuid4().hex[:12]}"
    quoted = urllib.parse.quote(path)
    page.goto(server.url(f"lab/workspaces/{workspace}/tree/{quoted}"))
    page.locator(".jp-Notebook").first.wait_for()


_KERNEL_STATE_JS = """(path) => {
    const app = window.jupyterapp;
    if (!app) { return null; }
    const widgets = Array.from(app.shell.widgets('main'));
    const widget = path
        ? widgets.find(w => w.context && w.context.path === path)
        : app.shell.currentWidget;
    const kernel = widget?.sessionContext?.session?.kernel;
    return kernel
        ? {id: kernel.id, clientId: kernel.clientId, status: kernel.status,
           connectionStatus: kernel.connectionStatus}
        : null;
}"""


def lab_kernel_state(page: Page, path: str = "") -> dict[str, Any] | None:
    """The kernel connection of the notebook at ``path`` (default: the current widget).

    ``{"id", "clientId", "status", "connectionStatus"}`` or ``None`` without a kernel.
    Needs ``--LabApp.expose_app_in_browser=True`` (set by :func:`jupyter_server_process`).
    """
    state: dict[str, Any] | None = page.evaluate(_KERNEL_STATE_JS, path)
    return state


def lab_wait_kernel_idle(page: Page, path: str = "", timeout_ms: float = 60_000) -> None:
    """Wait until the notebook's kernel websocket is connected and the kernel is idle.

    The toolbar's ``data-status="idle"`` alone is not enough: it can show the kernel
    model's status from the REST API before the websocket is even opened, and a cell run
    then does nothing (the prompt stays ``[ ]``).
    """
    page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(
        timeout=timeout_ms
    )
    page.wait_for_function(
        f"(path) => {{ const s = ({_KERNEL_STATE_JS})(path);"
        " return !!s && s.connectionStatus === 'connected' && s.status === 'idle'; }",
        arg=path,
        timeout=timeout_ms,
    )


def lab_run_all_cells(page: Page) -> None:
    """Run > Run All Cells, through the menu bar as a user does."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def lab_wait_output(page: Page, text: str, timeout_ms: float = 30_000) -> None:
    """Wait until some cell output shows ``text``."""
    page.locator(".jp-OutputArea-output", has_text=text).first.wait_for(timeout=timeout_ms)


def lab_outputs_text(page: Page) -> str:
    """The text of every cell output the page shows, one output a line."""
    return "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())


def lab_dialogs(page: Page) -> list[str]:
    """Texts of the dialogs open on the page (e.g. "Server Connection Error")."""
    return [text.strip() for text in page.locator(".jp-Dialog").all_inner_texts()]


def lab_run_then_close_mid_run(
    server: LabServer, name: str, wait_text: str = "line 5", wait_log: str = ""
) -> None:
    """A page runs the notebook and goes away while the cell still prints.

    ``wait_log``: a server log line to wait for before running (say, the room's).
    """
    with chromium() as session, report_failure(server, session):
        page = session.page
        lab_open_notebook(page, server, name)
        lab_wait_kernel_idle(page, name)
        if wait_log:
            server.wait_for_log(wait_log)
        lab_run_all_cells(page)
        lab_wait_output(page, wait_text)
        assert "DONE" not in lab_outputs_text(page), "the cell finished before the page left"
