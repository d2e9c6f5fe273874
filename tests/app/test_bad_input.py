"""Bad and unusual input: each case is handled, logged, and loses nothing."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import (
    LabLikeClient,
    load_cells,
    make_notebook,
    read_cells,
    read_notebook,
    run_and_leave,
    stream_text,
    wait_for,
)
from tornado.httpclient import HTTPClientError

SLOW = "import time\nprint('start', flush=True)\ntime.sleep(1.5)\nprint('end')"


async def test_nbformat_4_4_notebook_without_cell_ids(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    path = jp_root_dir / "old.ipynb"
    nb = nbformat.v4.new_notebook(nbformat_minor=4)
    nb.cells = [nbformat.v4.new_code_cell("1 + 1"), nbformat.v4.new_code_cell(SLOW)]
    for cell in nb.cells:
        del cell["id"]
    path.write_text(nbformat.writes(nb, version=4))
    _, kernel_id = await notebook_session(path.name)
    # JupyterLab gives cells ids of its own that are never in a 4.4 file.
    await run_and_leave(jp_ws_fetch, kernel_id, SLOW, "f3c1e0d2-generated-by-lab")

    def written() -> bool:
        cell = read_notebook(path)["cells"][1]
        return stream_text(cell) == "start\nend\n"

    await wait_for(written, what="outputs in the 4.4 notebook")
    saved = read_notebook(path)
    assert saved["nbformat_minor"] == 4
    assert all("id" not in cell for cell in saved["cells"])


async def test_same_notebook_in_two_tabs(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    path = jp_root_dir / "two-tabs.ipynb"
    code = SLOW.replace("1.5", "3")
    make_notebook(path, [("c", code)])
    _, kernel_id = await notebook_session(path.name)
    first = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    second = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await first.wait_ready()
    msg_id = await first.execute(code, cell_id="c")
    await first.wait_for_output(msg_id, "start")
    first.close()
    await asyncio.sleep(4 * capture.save_interval)
    assert read_cells(path)["c"]["outputs"] == [], "written while the second tab was attached"
    second.close()
    await wait_for(lambda: stream_text(read_cells(path)["c"]) == "start\nend\n", what="write")


async def test_interrupt_while_detached(
    jp_root_dir: Path, jp_fetch: Any, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    path = jp_root_dir / "interrupted.ipynb"
    code = "import time\nprint('start', flush=True)\ntime.sleep(60)"
    make_notebook(path, [("c", code)])
    _, kernel_id = await notebook_session(path.name)
    await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
    await jp_fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")

    def interrupted() -> bool:
        outputs = read_cells(path)["c"]["outputs"]
        return any(o.get("ename") == "KeyboardInterrupt" for o in outputs)

    await wait_for(interrupted, what="the KeyboardInterrupt on disk")
    assert stream_text((await load_cells(path))["c"]) == "start\n"


async def test_comm_messages_with_binary_buffers_are_kept_as_widget_state(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = jp_root_dir / "widgets.ipynb"
    code = (
        "import time\nfrom comm import create_comm\nprint('start', flush=True)\n"
        "c = create_comm(target_name='jupyter.widget', comm_id='odd-widget',\n"
        "                data={'state': {}, 'buffer_paths': [['a']]},\n"
        "                buffers=[b'\\x00\\xff' * 100])\n"
        "c.send({'method': 'update', 'state': {}, 'buffer_paths': [['b']]},\n"
        "       buffers=[memoryview(b'\\x01' * 1000)])\n"
        "c.send({'method': 'custom', 'content': {}}, buffers=[b'\\x02'])\n"
        "time.sleep(1)\nprint('end')"
    )
    make_notebook(path, [("c", code)])
    _, kernel_id = await notebook_session(path.name)
    with caplog.at_level(logging.WARNING):
        await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
        await wait_for(lambda: stream_text(read_cells(path)["c"]) == "start\nend\n", what="write")
    model = capture.store.widgets.models_of(kernel_id)["odd-widget"]
    assert model.buffers == {("a",): b"\x00\xff" * 100, ("b",): b"\x01" * 1000}
    assert "widgets" not in read_notebook(path)["metadata"]  # no view of it was displayed
    assert not [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and "jupyter_persist" in r.getMessage()
    ]


async def test_undecodable_bytes_and_surrogates_in_output(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    path = jp_root_dir / "bytes.ipynb"
    code = (
        "import sys, time\nprint('start', flush=True)\n"
        # \udcff reaches the wire as the raw byte 0xff (jupyter_client's surrogateescape):
        # a message that is not valid UTF-8.
        "print('lone \\udcff surrogate', flush=True)\n"
        "sys.stdout.write(bytes(range(128, 160)).decode('latin-1') + '\\n')\n"
        "time.sleep(1)\nprint('end')"
    )
    make_notebook(path, [("c", code)])
    _, kernel_id = await notebook_session(path.name)
    await run_and_leave(jp_ws_fetch, kernel_id, code, "c")

    def written() -> bool:
        text = stream_text(read_cells(path)["c"])
        return text.startswith("start\nlone ") and text.endswith("end\n")

    await wait_for(written, what="the odd characters written")
    json.loads(path.read_bytes().decode("utf-8"))  # valid UTF-8 JSON


async def test_very_long_line_is_capped_and_logged_whole(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    path = jp_root_dir / "long-line.ipynb"
    code = (
        "import time\nprint('start', flush=True)\nprint('x' * 3_000_000)\n"
        "time.sleep(1)\nprint('end')"
    )
    make_notebook(path, [("c", code)])
    _, kernel_id = await notebook_session(path.name)
    await run_and_leave(jp_ws_fetch, kernel_id, code, "c")
    await wait_for(lambda: stream_text(read_cells(path)["c"]).endswith("end\n"), what="write")
    text = stream_text((await load_cells(path))["c"])
    assert "left out" in text
    assert (
        f"the whole text is in the notebook's text log in {capture.recorder.text_log.directory}"
        in text
    )
    assert len(text) < 700_000
    log_file = capture.recorder.text_log.file_for(path.name)
    await wait_for(lambda: log_file.read_text().endswith("end\n"), what="the text log")
    assert "x" * 3_000_000 + "\n" in log_file.read_text()


async def test_session_path_outside_the_root_writes_nothing_outside(
    jp_root_dir: Path,
    jp_fetch: Any,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outside = jp_root_dir.parent / "outside.ipynb"
    bad = {
        "path": "../outside.ipynb",
        "type": "notebook",
        "name": "",
        "kernel": {"name": "python3"},
    }
    # jupyter_server refuses to start a session there...
    with pytest.raises(HTTPClientError):
        await jp_fetch("api", "sessions", method="POST", body=json.dumps(bad))
    # ...but a session can be pointed there afterwards: its path is only a label.
    make_notebook(jp_root_dir / "inside.ipynb", [("c", SLOW)])
    session_id, kernel_id = await notebook_session("inside.ipynb")
    await jp_fetch(
        "api", "sessions", session_id, method="PATCH", body=json.dumps({"path": "../outside.ipynb"})
    )
    with caplog.at_level(logging.WARNING):
        msg_id = await run_and_leave(jp_ws_fetch, kernel_id, SLOW, "c")
        await wait_for(lambda: not capture.store.get(msg_id).running, what="finished")
        await asyncio.sleep(2 * capture.save_interval)
    assert not outside.exists()
    assert capture.store.get(msg_id).path == "../outside.ipynb"
    assert capture.store.get(msg_id).dirty
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("jupyter_persist" in m and "outside.ipynb" in m for m in warnings), warnings


async def test_input_while_detached(
    jp_root_dir: Path,
    jp_ws_fetch: Any,
    notebook_session: Any,
    capture: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = jp_root_dir / "asks.ipynb"
    code = "import time\nprint('before', flush=True)\ntime.sleep(1)\nname = input('Your name? ')"
    make_notebook(path, [("c", code)])
    _, kernel_id = await notebook_session(path.name)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    with caplog.at_level(logging.INFO):
        msg_id = await client.execute(code, cell_id="c", allow_stdin=True)
        await client.wait_for_output(msg_id, "before")
        client.close()
        await wait_for(lambda: stream_text(read_cells(path)["c"]) == "before\n", what="write")
        log_file = capture.recorder.text_log.file_for(path.name)
        await wait_for(
            lambda: (
                log_file.exists() and "[waiting for input: 'Your name? ']" in log_file.read_text()
            ),
            what="the text log to say the cell waits for input",
        )
    assert capture.store.get(msg_id).running
    assert any("is waiting for input ('Your name? ')" in r.getMessage() for r in caplog.records)
