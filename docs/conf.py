"""Sphinx configuration. Build: ``sphinx-build -W -b html docs docs/_build/html``."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

from jupyter_persist import __version__
from jupyter_persist.app import PersistExtension

project = "jupyter-persist"
author = "the jupyter-persist developers"
copyright = "2026, the jupyter-persist developers"
version = release = __version__

extensions = ["myst_parser"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated"]
html_theme = "alabaster"
html_title = f"jupyter-persist {__version__}"

DOCS = Path(__file__).parent
GENERATED = DOCS / "_generated"
SUBCOMMANDS = ["status", "log", "show", "restore", "clean"]


def write_if_changed(path: Path, text: str) -> None:
    """Write a generated file, leaving it alone when unchanged (keeps rebuilds quick)."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def config_reference() -> str:
    """Every trait the extension defines: name, type, default, help."""
    parts = []
    traits = PersistExtension.class_own_traits(config=True)
    # Traits whose default is computed at start by a ``@default`` method.
    computed = {
        getattr(member, "trait_name", None)
        for member in vars(PersistExtension).values()
        if type(member).__name__ == "DefaultHandler"
    }
    for name, trait in sorted(traits.items()):
        default = "computed (see below)" if name in computed else f"`{trait.default_value_repr()}`"
        help_text = inspect.cleandoc(trait.help)
        parts.append(
            f"## `PersistExtension.{name}`\n\n"
            f"{type(trait).__name__}, default {default}.\n\n{help_text}\n"
        )
    return "\n".join(parts)


def generate(app: Any) -> None:
    """The configuration reference from the traits, the CLI reference from ``--help``."""
    GENERATED.mkdir(exist_ok=True)
    write_if_changed(GENERATED / "config.md", config_reference())
    for name in ["", *SUBCOMMANDS]:
        command = [sys.executable, "-m", "jupyter_persist.cli", *([name] if name else [])]
        help_text = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, check=True, timeout=120
        ).stdout
        write_if_changed(GENERATED / f"cli-{name or 'main'}.txt", help_text)


def setup(app: Any) -> None:
    """Generate the reference pages before reading the sources."""
    app.connect("builder-inited", generate)
