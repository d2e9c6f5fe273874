"""The file written with no client attached equals nbclient's result for the same notebook."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import nbformat
from helpers import LabLikeClient, load_cells, read_cells, wait_for
from nbclient import NotebookClient

CELLS = [
    (
        "streams",
        "import sys, time\nprint('out 1')\nprint('out 2')\nsys.stdout.flush()\ntime.sleep(0.2)\n"
        "print('err 1', file=sys.stderr)\nprint('err 2', file=sys.stderr)",
    ),
    (
        "progress",
        "import time\nfor i in range(1000):\n"
        "    print(f'\\r{i:4d}/999', end='', flush=True)\nprint()",
    ),
    (
        "display-updates",
        "h = display('first', display_id=True)\nh.update('second')\nh.update('third')",
    ),
    (
        "display-origin",
        "from IPython.display import display\n_ = display('original', display_id='across')",
    ),
    (
        "display-update",
        "from IPython.display import update_display\n"
        "update_display('updated from a later cell', display_id='across')\nprint('updated')",
    ),
    (
        "clear-wait",
        "from IPython.display import clear_output\nimport time\nfor i in range(5):\n"
        "    clear_output(wait=True)\n    print(f'iteration {i}')\n    time.sleep(0.05)",
    ),
    ("result", "6 * 7"),
    ("markdown", "from IPython.display import Markdown\ndisplay(Markdown('# A *title*'))"),
    ("backspace", "print('abc\\b\\bX')"),
    ("html-and-text", "from IPython.display import HTML\nHTML('<b>bold</b>')"),
    ("error", "print('before')\n1 / 0"),
]


def build_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for cell_id, source in CELLS:
        nb.cells.append(nbformat.v4.new_code_cell(source, id=cell_id))
    return nb


BACKSPACE = re.compile(r"[^\n]\x08")
CARRIAGE_RETURN = re.compile(r".*\r(?=[^\n])")


def terminal_text(text: str) -> str:
    """Fold \\b and \\r the way a terminal log reader would (nbclient's rules, looped).

    nbclient's own ``coalesce_streams`` means to do this but its backspace loop never
    runs (it compares lengths before the first substitution), so we apply it here.
    """
    previous = None
    while previous != text:
        previous, text = text, BACKSPACE.sub("", text)
    return CARRIAGE_RETURN.sub("", text)


def run_with_nbclient() -> dict[str, Any]:
    """Execute the notebook with nbclient; merge consecutive streams and fold their text."""
    nb = build_notebook()
    NotebookClient(nb, kernel_name="python3", allow_errors=True, record_timing=False).execute()
    cells = {}
    for cell in nb.cells:
        merged: list[Any] = []
        for output in cell.outputs:
            previous = merged[-1] if merged else None
            if (
                output.output_type == "stream"
                and previous is not None
                and previous.output_type == "stream"
                and previous.name == output.name
            ):
                previous.text += output.text
            else:
                merged.append(copy.deepcopy(output))
        for output in merged:
            if output.output_type == "stream":
                output.text = terminal_text(output.text)
        cell.outputs = merged
        cells[cell.id] = cell
    return cells


async def test_outputs_equal_nbclient(
    jp_root_dir: Path, jp_ws_fetch: Any, notebook_session: Any, capture: Any
) -> None:
    nb_path = jp_root_dir / "equivalence.ipynb"
    nbformat.write(build_notebook(), str(nb_path))
    _, kernel_id = await notebook_session(nb_path.name)
    client = await LabLikeClient.connect(jp_ws_fetch, kernel_id)
    await client.wait_ready()
    # Like JupyterLab's "Run All": every request is sent at once, then the tab goes away.
    for cell_id, source in CELLS:
        await client.execute(source, cell_id=cell_id)
    client.close()

    await wait_for(
        lambda: any(o["output_type"] == "error" for o in read_error_cell(nb_path)),
        timeout=60,
        what="the last cell's error in the file",
    )
    await load_cells(nb_path)  # the file is complete, not half rewritten
    ours = {cell.id: cell for cell in nbformat.read(str(nb_path), as_version=4).cells}
    expected = run_with_nbclient()
    for cell_id, _ in CELLS:
        mine = ours[cell_id]
        assert mine.outputs == expected[cell_id].outputs, f"cell {cell_id}"
        assert mine.execution_count == expected[cell_id].execution_count, f"cell {cell_id}"


def read_error_cell(path: Path) -> list[dict[str, Any]]:
    return list(read_cells(path)["error"]["outputs"])
