"""Make the screenshots of docs/reopening.md: a notebook reopened while its cell runs.

Run from the repository root, with the test requirements installed (``bash .ci/run``
installs them) and Debian's chromium: ``python docs/images/take_screenshots.py``.
It starts a JupyterLab of its own on 127.0.0.1, as the browser tests do.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))

from browser import (  # noqa: E402
    PYTHON3_KERNELSPEC,
    chromium,
    jupyter_server_process,
    lab_open_notebook,
    lab_run_all_cells,
    lab_wait_kernel_idle,
    lab_wait_output,
    wait_until,
)
from helpers import make_notebook  # noqa: E402
from playwright.sync_api import Page  # noqa: E402

SOURCE = (
    "import time\n"
    "for epoch in range(1, 41):\n"
    '    print(f"epoch {epoch:2d}  loss {1 / epoch:.4f}", flush=True)\n'
    "    time.sleep(0.5)\n"
    'print("DONE", flush=True)\n'
)


def dismiss_news(page: Page) -> None:
    """Answer JupyterLab's "notified about official Jupyter news?" toast, if it shows."""
    no = page.locator(".jp-Notification-Toast-Close, .jp-toast-button", has_text="No")
    if no.count():
        no.first.click()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, jupyter_server_process(Path(tmp)) as server:
        name = "training.ipynb"
        make_notebook(server.root_dir / name, [("train", SOURCE)], kernelspec=PYTHON3_KERNELSPEC)
        with chromium() as session:
            page = session.page
            lab_open_notebook(page, server, name)
            lab_wait_kernel_idle(page, name)
            lab_run_all_cells(page)
            lab_wait_output(page, "epoch  3")
        with chromium() as session:
            page = session.page
            page.set_viewport_size({"width": 1280, "height": 720})
            lab_open_notebook(page, server, name, workspace=f"shots-{uuid.uuid4().hex[:8]}")
            lab_wait_output(page, "epoch 12")
            dismiss_news(page)
            page.wait_for_timeout(500)
            page.screenshot(path=str(HERE / "reopened-mid-run.png"))
            lab_wait_output(page, "DONE", timeout_ms=60_000)
            wait_until(
                lambda: page.locator(".jp-persist-Indicator").inner_text() == "Outputs kept",
                10,
                "the indicator",
            )
            page.screenshot(path=str(HERE / "reopened-done.png"))
    print(f"wrote {HERE / 'reopened-mid-run.png'} and {HERE / 'reopened-done.png'}")


if __name__ == "__main__":
    main()
