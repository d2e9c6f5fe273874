"""Differential test: our stream text processing against JupyterLab's own code.

The installed JupyterLab bundle's stream-text function (``processText`` in
``packages/outputarea/src/model.ts``) is cut out of the shipped JavaScript and run
under Node.js on thousands of random chunk sequences; our port must agree on every one.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

from jupyter_core.paths import jupyter_path

from jupyter_persist.model.reducer import process_text

DRIVER = """
const fs = require('fs');
const cases = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const results = cases.map(chunks => {
  let text = '', cursor = 0;
  for (const chunk of chunks) {
    const r = PROCESS(cursor, chunk, text);
    text = r.text;
    cursor = r.index;
  }
  return text;
});
process.stdout.write(JSON.stringify(results));
"""


def _jupyterlab_process_text_source() -> tuple[str, str]:
    """Return (JavaScript defining the function, its name) from the installed bundle."""
    bundles = [
        path for root in jupyter_path("lab", "static") for path in Path(root).glob("jlab_core.*.js")
    ]
    assert bundles, "JupyterLab's static bundle (jlab_core.*.js) is not installed"
    source = bundles[0].read_text(encoding="utf-8")
    # processText's body starts by testing for the three control characters, and uses a
    # helper that searches from an offset; both are distinctive in the minified bundle.
    found = re.search(
        r"function (\w+)\((\w+),(\w+),(\w+)\)\{let (\w+)=\2\.slice\(\4\)\.search\(\3\);"
        r"return \5>=0\?\5\+\4:\5\}function (\w+)\(\w+,\w+,\w+\)\{.*?"
        r"return\{text:\w+,index:\w+\}\}",
        source,
    )
    assert found, f"processText not found in {bundles[0]}: JupyterLab's bundle changed"
    return found.group(0), found.group(6)


def test_process_text_matches_jupyterlab(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed to run JupyterLab's own code"
    code, name = _jupyterlab_process_text_source()
    script = tmp_path / "driver.js"
    script.write_text(code + DRIVER.replace("PROCESS", name), encoding="utf-8")
    rng = random.Random(20261125)
    alphabet = ["a", "b", "c", "xyz", "\n", "\r", "\b", "\r\n", "\b\b", "\n\r"]
    cases = [
        [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
            for _ in range(rng.randint(1, 5))
        ]
        for _ in range(3000)
    ]
    (tmp_path / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    completed = subprocess.run(
        [node, str(script), str(tmp_path / "cases.json")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    expected = json.loads(completed.stdout)
    for chunks, jupyterlab_text in zip(cases, expected, strict=True):
        text, cursor = "", 0
        for chunk in chunks:
            text, cursor = process_text(cursor, chunk, text)
        assert text == jupyterlab_text, f"differs from JupyterLab for {chunks!r}"
