"""Our pre-save hook composes with a ContentsManager.pre_save_hook the admin configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import LabLikeClient, load_cells, make_notebook, read_notebook, stream_text, wait_for


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_persist": True}},
        "PersistExtension": {"save_interval": 0.5},
        "ContentsManager": {"pre_save_hook": "helpers.admin_pre_save_hook"},
    }


async def test_admin_pre_save_hook_still_runs(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "hooked.ipynb"
    code = "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')"
    make_notebook(nb_path, [("c", code)])
    _, kernel_id = await notebook_session(nb_path.name)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    msg_id = await client.execute(code, cell_id="c")
    await client.wait_for_output(msg_id, "a")
    client.close()
    await wait_for(lambda: stream_text((read_cells_sync(nb_path))["c"]) == "a\nb\n", what="write")
    assert read_notebook(nb_path)["metadata"]["admin_hook_ran"] is True
    assert (await load_cells(nb_path))["c"]["execution_count"] == 1


def read_cells_sync(path: Path) -> dict[str, Any]:
    return {c["id"]: c for c in read_notebook(path)["cells"]}
