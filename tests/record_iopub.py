"""Record real IOPub message sequences from ipykernel for the reducer tests.

Run ``python tests/record_iopub.py`` to refresh ``tests/data/iopub_recordings.json``.
Each case is a list of cells run one after another in one kernel; each message keeps
what the reducer reads (header.msg_type, parent msg_id, content), with the parent id
replaced by the cell's index so recordings are stable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jupyter_client.manager import start_new_kernel

CASES: dict[str, list[str]] = {
    "streams": [
        "import sys\nprint('out 1')\nprint('err 1', file=sys.stderr)\nprint('out 2')\n"
        "sys.stdout.flush(); sys.stderr.flush()\nprint('err 2', file=sys.stderr)\n"
        "sys.stderr.flush()\nprint('out 3')",
    ],
    "progress_cr": [
        "import sys\nfor i in range(2001):\n    print(f'\\rstep {i:4d}/2000', end='', flush=True)\n"
        "print()\nprint('done')",
    ],
    "backspace": [
        "import sys, time\nprint('abc\\b\\bX')\nprint('12345', end='', flush=True)\n"
        "time.sleep(0.3)\nprint('\\b\\b\\bZ', flush=True)\nprint('line\\n\\bkept')",
    ],
    "display_updates": [
        "h = display('first', display_id=True)\nh.update('second')\nh.update('third')\n"
        "display('plain')",
    ],
    "display_across_cells": [
        "from IPython.display import display\ndisplay('original', display_id='shared')",
        "from IPython.display import update_display\n"
        "update_display('updated', display_id='shared')\n"
        "print('cell 2 ran')",
    ],
    "display_same_id_twice": [
        "from IPython.display import display\ndisplay('one', display_id='dup')\nprint('between')\n"
        "display('two', display_id='dup')",
    ],
    "clear_wait": [
        "from IPython.display import clear_output\nimport time\nfor i in range(5):\n"
        "    clear_output(wait=True)\n    print(f'iteration {i}')\n    time.sleep(0.05)",
    ],
    "clear_now": [
        "from IPython.display import clear_output\nprint('gone')\nclear_output()\nprint('stays')",
    ],
    "execute_result": ["print('side'); 6 * 7"],
    "markdown": ["from IPython.display import Markdown, display\ndisplay(Markdown('# Title'))"],
    "error": ["print('before')\n1 / 0"],
}


def record(code_cells: list[str]) -> list[dict[str, object]]:
    manager, client = start_new_kernel(kernel_name="python3")
    messages: list[dict[str, object]] = []
    try:
        for index, code in enumerate(code_cells):
            msg_id = client.execute(code)
            while True:
                msg = client.get_iopub_msg(timeout=30)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                messages.append(
                    {
                        "header": {"msg_type": msg["header"]["msg_type"]},
                        "parent_header": {"msg_id": f"cell-{index}", "msg_type": "execute_request"},
                        "content": msg["content"],
                    }
                )
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return messages


def main() -> int:
    out = Path(__file__).parent / "data" / "iopub_recordings.json"
    recordings = {name: record(cells) for name, cells in CASES.items()}
    out.write_text(json.dumps(recordings, indent=1, sort_keys=True, default=str) + "\n")
    print(f"wrote {out} ({sum(len(v) for v in recordings.values())} messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
