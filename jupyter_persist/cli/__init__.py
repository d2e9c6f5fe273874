"""``jupyter persist``: see what the extension captures, follow a cell, recover by hand."""

from __future__ import annotations

import sys
from typing import Any

from jupyter_core.application import JupyterApp

from .. import __version__
from .files import CleanApp, RestoreApp
from .outputs import LogApp, ShowApp
from .status import StatusApp


class PersistApp(JupyterApp):
    """The ``jupyter persist`` command: its subcommands do the work."""

    name = "jupyter persist"
    version = __version__
    description = """Work with jupyter-persist, the server extension that keeps every
    notebook output on the server. Each subcommand has its own --help."""
    examples = "jupyter persist status\njupyter persist log -f train.ipynb"
    subcommands: dict[str, Any] = {
        "status": (StatusApp, StatusApp.__doc__),
        "log": (LogApp, LogApp.__doc__),
        "show": (ShowApp, ShowApp.__doc__),
        "restore": (RestoreApp, RestoreApp.__doc__),
        "clean": (CleanApp, CleanApp.__doc__),
    }

    def start(self) -> None:
        """Run the subcommand given, or say which exist."""
        if self.subapp is None:
            given = (
                f"unknown subcommand {self.extra_args[0]!r}"
                if self.extra_args
                else "no subcommand given"
            )
            print(
                f"jupyter persist: error: {given}; use one of {', '.join(self.subcommands)} "
                "(see jupyter persist --help)",
                file=sys.stderr,
            )
            self.exit(1)
        super().start()


main = PersistApp.launch_instance
