"""``GET /api/persist/file-version``: a returning tab may take the version we wrote.

On a real server with a real kernel: the tab's version is what the contents API gave it
(``last_modified`` and ``hash``), as JupyterLab keeps it; the extension writes the file
while the tab is away; the answer says whether every change since is ours.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import (
    error_code,
    fetch_json,
    make_notebook,
    read_cells,
    read_notebook,
    read_only_server_config,
    run_and_leave,
    stream_text,
    wait_for,
)

from jupyter_persist.storage.versions import FileVersion

NAME = "away.ipynb"
SLOW = "import time\nfor i in range(6):\n    print(f'line {i}', flush=True)\n    time.sleep(1)"
EXPECTED = "".join(f"line {i}\n" for i in range(6))


async def tab_version(jp_fetch: Any, path: str = NAME) -> dict[str, Any]:
    """The file's version as JupyterLab asks for it before a save (no content, a hash)."""
    model = await fetch_json(jp_fetch, "api", "contents", path, params={"content": 0, "hash": 1})
    return {"last_modified": model["last_modified"], "hash": model["hash"]}


async def ask(jp_fetch: Any, version: dict[str, Any], token: str = "") -> dict[str, Any]:
    params = {"path": NAME, **version}
    if token:
        params["chain"] = token
    answer: dict[str, Any] = await fetch_json(
        jp_fetch, "api", "persist", "file-version", params=params
    )
    return answer


async def written_while_away(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> tuple[dict[str, Any], str]:
    """A tab loads the notebook, runs the slow cell and goes; the run ends on disk."""
    make_notebook(jp_root_dir / NAME, [("slow", SLOW)])
    loaded = await tab_version(jp_fetch)
    _, kernel_id = await notebook_session(NAME)
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, SLOW, "slow", wait_text="line 0")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.running and not execution.dirty, timeout=30)
    assert stream_text(read_cells(jp_root_dir / NAME)["slow"]) == EXPECTED
    return loaded, kernel_id


async def test_a_tab_away_while_we_wrote_may_take_our_version(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    loaded, _ = await written_while_away(
        jp_fetch, jp_ws_fetch, jp_root_dir, notebook_session, capture
    )
    disk = await tab_version(jp_fetch)
    assert disk != loaded
    answer = await ask(jp_fetch, loaded)
    assert answer["only_ours"] is True
    assert answer["hash"] == disk["hash"]
    assert answer["last_modified"] == disk["last_modified"]
    assert answer["hash_algorithm"] == "sha256"

    # Having taken it, the tab holds the disk's version: asked again, still ours.
    again = await ask(jp_fetch, disk, answer["token"])
    assert again["only_ours"] is True
    assert again["token"] == answer["token"]


async def test_a_tab_that_loaded_the_file_mid_run_may_take_our_later_version(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    """A page reopened mid-run loads one of our writes as the next lands (CI saw it)."""
    make_notebook(jp_root_dir / NAME, [("slow", SLOW)])
    _, kernel_id = await notebook_session(NAME)
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, SLOW, "slow", wait_text="line 0")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.dirty and execution.placed, timeout=30)
    mid_run = await tab_version(jp_fetch)  # the file as one of our writes left it
    await wait_for(lambda: not execution.running and not execution.dirty, timeout=30)
    disk = await tab_version(jp_fetch)
    assert disk != mid_run, "no write of ours after the tab loaded the file"
    answer = await ask(jp_fetch, mid_run)
    assert answer["only_ours"] is True
    assert answer["hash"] == disk["hash"]


async def test_our_writes_pause_for_the_tab_that_took_our_version(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    """Between the answer and the tab's save, a write of ours would make a dialog again."""
    make_notebook(jp_root_dir / NAME, [("slow", SLOW)])
    loaded = await tab_version(jp_fetch)
    _, kernel_id = await notebook_session(NAME)
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, SLOW, "slow", wait_text="line 0")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.dirty and execution.placed, timeout=30)
    answer = await ask(jp_fetch, loaded)
    assert answer["only_ours"] is True
    # The run goes on; nothing of it is written while the tab saves.
    await wait_for(lambda: execution.dirty, timeout=10)
    outcome = await capture.flusher.flush(NAME)
    assert outcome == "tab saving"
    assert await tab_version(jp_fetch) == {k: answer[k] for k in ("last_modified", "hash")}
    # The tab's save (here: the contents API, as the tab's PUT) passes the save guard.
    model = await fetch_json(jp_fetch, "api", "contents", NAME)
    body = {"type": "notebook", "format": "json", "content": model["content"]}
    saved_at = time.time()
    await fetch_json(jp_fetch, "api", "contents", NAME, method="PUT", body=json.dumps(body))
    # That save ends the pause: our writes go on at once, not 10 s later. (Not watched
    # through `execution.dirty`: a write right after a line arrives leaves it dirty for
    # less than a poll.)
    await wait_for(
        lambda: capture.flusher.last_written.get(NAME, 0.0) > saved_at,
        timeout=5,
        what="a write of ours soon after the save",
    )
    await wait_for(lambda: not execution.running and not execution.dirty, timeout=30)
    assert stream_text(read_cells(jp_root_dir / NAME)["slow"]) == EXPECTED


async def test_a_change_by_someone_else_is_not_taken(
    jp_fetch: Any, jp_ws_fetch: Any, jp_root_dir: Path, notebook_session: Any, capture: Any
) -> None:
    loaded, kernel_id = await written_while_away(
        jp_fetch, jp_ws_fetch, jp_root_dir, notebook_session, capture
    )
    # An editor changes the file after our last write.
    notebook = nbformat.read(jp_root_dir / NAME, as_version=4)
    notebook.cells.append(nbformat.v4.new_markdown_cell("edited elsewhere", id="md"))
    nbformat.write(notebook, jp_root_dir / NAME)
    edited = await tab_version(jp_fetch)
    answer = await ask(jp_fetch, loaded)
    assert answer == {"path": NAME, "only_ours": False}

    # Our next write is on top of the editor's: still not only ours since the tab loaded.
    msg_id = await run_and_leave(jp_ws_fetch, kernel_id, "print('more')", "slow", wait_text="more")
    execution = capture.store.get(msg_id)
    await wait_for(lambda: not execution.running and not execution.dirty, timeout=30)
    assert stream_text(read_cells(jp_root_dir / NAME)["slow"]) == "more\n"
    assert (await ask(jp_fetch, loaded))["only_ours"] is False
    # A tab that loaded the editor's version may take ours: only our write came since.
    assert [c["id"] for c in read_notebook(jp_root_dir / NAME)["cells"]] == ["slow", "md"]
    assert (await ask(jp_fetch, edited))["only_ours"] is True


async def test_a_notebook_we_never_wrote(jp_fetch: Any, jp_root_dir: Path, capture: Any) -> None:
    make_notebook(jp_root_dir / NAME, [("c", "1")])
    answer = await ask(jp_fetch, await tab_version(jp_fetch))
    assert answer == {"path": NAME, "only_ours": False}


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({}, 400, "notebook path"),
        ({"path": NAME}, 400, "the tab's version is needed"),
        ({"path": NAME, "last_modified": "monday"}, 400, "not an ISO 8601 time"),
        ({"path": "nowhere.ipynb", "hash": "abc"}, 404, "nowhere.ipynb"),
    ],
)
async def test_bad_requests(
    jp_fetch: Any,
    jp_root_dir: Path,
    capture: Any,
    params: dict[str, str],
    code: int,
    message: str,
) -> None:
    make_notebook(jp_root_dir / NAME, [("c", "1")])
    # A lineage for the missing file too, so that the ContentsManager is asked.
    capture.writer.versions.wrote("nowhere.ipynb", FileVersion(None), FileVersion(None))
    got, text = await error_code(jp_fetch, "api", "persist", "file-version", params=params)
    assert got == code
    assert message in json.loads(text)["message"]


class TestAuthorization:
    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return read_only_server_config()

    async def test_a_user_who_may_not_write_is_refused(
        self, jp_fetch: Any, jp_root_dir: Path, capture: Any
    ) -> None:
        make_notebook(jp_root_dir / NAME, [("c", "1")])
        code, _ = await error_code(
            jp_fetch, "api", "persist", "file-version", params={"path": NAME, "hash": "abc"}
        )
        assert code == 403
