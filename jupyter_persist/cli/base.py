"""What every ``jupyter persist`` subcommand shares: config, state paths, running servers."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_core.application import JupyterApp
from jupyter_server.serverapp import list_running_servers
from traitlets import TraitError, Unicode
from traitlets.config import Application
from traitlets.config.loader import ArgumentError, KVArgParseConfigLoader

from .. import __version__
from ..app import PersistExtension
from ..storage.journal import Journal
from ..storage.ondisk import candidate_api_paths
from ..storage.textlog import TextLog


class CommandError(Exception):
    """An expected failure: shown as one line, and the command exits with status 1."""


class StrictOptionsLoader(KVArgParseConfigLoader):
    """Refuses an option the command does not know.

    traitlets only warns and goes on, and the option swallows the next argument as its
    value: ``show --bogus train.ipynb`` would then complain of a missing NOTEBOOK.
    """

    def _handle_unrecognized_alias(self, arg: str) -> None:
        raise ArgumentError(f"unknown option --{arg}")


@dataclass
class RunningServer:
    """A Jupyter server found running, and what its extension reports (if it runs one)."""

    url: str
    root_dir: str
    pid: int | None
    token: str
    #: ``GET /api/persist/status``; None when the server did not give it.
    status: dict[str, Any] | None = None
    #: Why there is no status (extension off, server not answering).
    problem: str | None = None


class PersistCommand(JupyterApp):
    """Base of the subcommands: reads the server's config for the extension's settings."""

    version = __version__
    # The extension's traits are set in the server's config files; read the same ones.
    config_file_name = Unicode("jupyter_server_config", config=True, help="Config file to read.")
    classes = [PersistExtension]
    aliases = {"state-dir": "PersistExtension.state_dir"}
    flags: dict[str, Any] = {}

    @property
    def settings(self) -> PersistExtension:
        """The extension's settings as the server would see them (config files, options)."""
        return PersistExtension(config=self.config)

    def journal(self) -> Journal:
        """The journal directory, as the server uses it."""
        return Journal(Path(self.settings.state_dir) / "journals", log=self.log)

    def text_log(self) -> TextLog | None:
        """The text log directory, or None when the text log is off."""
        settings = self.settings
        if not settings.text_log:
            return None
        return TextLog(Path(settings.text_log_dir), settings.text_log_max_bytes, log=self.log)

    def running_servers(self) -> list[RunningServer]:
        """The servers ``jupyter server list`` would list, with their extension's status."""
        servers = []
        for info in list_running_servers(self.runtime_dir, log=self.log):
            server = RunningServer(
                url=str(info.get("url", "")),
                root_dir=str(info.get("root_dir", "")),
                pid=info.get("pid"),
                token=str(info.get("token", "")),
            )
            server.status, server.problem = fetch_status(server)
            servers.append(server)
        return servers

    def candidates(self, notebook: str, servers: list[RunningServer] | None = None) -> list[str]:
        """API paths the notebook file given on the command line may have."""
        roots = [s.root_dir for s in servers or [] if s.root_dir]
        return candidate_api_paths(notebook, roots)

    def notebook_argument(self) -> str:
        """The one NOTEBOOK argument of the command."""
        if len(self.extra_args) != 1:
            raise CommandError(f"expected one NOTEBOOK argument, got {len(self.extra_args)}")
        return str(self.extra_args[0])

    def _create_loader(
        self,
        argv: list[str] | None,
        aliases: dict[str, Any],
        flags: dict[str, Any],
        classes: Any,
    ) -> KVArgParseConfigLoader:
        return StrictOptionsLoader(
            argv, aliases, flags, classes=classes, log=self.log, subcommands=self.subcommands
        )

    def parse_command_line(self, argv: Any = None) -> None:
        """Read the options; a bad one is one line on stderr and status 1."""
        try:
            # Undecorated: traitlets' own handler logs a CRITICAL line of another format.
            Application.parse_command_line.__wrapped__(self, argv)  # type: ignore[attr-defined]
        except (TraitError, ArgumentError) as err:
            self.fail(f"{err} (see --help)")

    def initialize(self, argv: Any = None) -> None:
        """Read the options and config files; check the extension's settings in them."""
        super().initialize(argv)
        try:
            self.settings  # noqa: B018  (built to be validated)
        except TraitError as err:
            self.fail(str(err))

    def start(self) -> None:
        """Run the command; an expected failure is one line on stderr and status 1."""
        try:
            self.run()
        except CommandError as err:
            self.fail(str(err))
        except OSError as err:
            # A file that cannot be read or written: say which, and why, in one line.
            where = f": {err.filename}" if err.filename else ""
            self.fail(f"{err.strerror or err}{where}")
        except KeyboardInterrupt:
            self.exit(130)

    def progress(self, message: str) -> None:
        """Say on stderr what a step that may take a while is doing (stdout stays data)."""
        print(message, file=sys.stderr, flush=True)

    def reading(self, journal_file: Path) -> None:
        """Say that a journal is being read, and how big it is."""
        self.progress(f"Reading {journal_file} ({size(journal_file.stat().st_size)})...")

    def fail(self, message: str) -> None:
        """Print ``message`` as the command's one error line and exit with status 1."""
        print(f"jupyter persist {self.name.split()[-1]}: error: {message}", file=sys.stderr)
        self.exit(1)

    def run(self) -> None:
        """The command itself."""
        raise NotImplementedError


def fetch_status(server: RunningServer) -> tuple[dict[str, Any] | None, str | None]:
    """Ask a running server for ``/api/persist/status``: (status, None) or (None, why not)."""
    # The URL is a running server's own, from its server info file (http or https).
    request = urllib.request.Request(  # noqa: S310
        server.url.rstrip("/") + "/api/persist/status",
        headers={"Authorization": f"token {server.token}"} if server.token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return json.loads(response.read()), None
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None, "jupyter_persist is not enabled on this server"
        return None, f"the server answered {err.code} {err.reason}"
    except (OSError, ValueError) as err:
        return None, f"the server does not answer ({err})"


def size(count: float, unit: str = "bytes") -> str:
    """A count with a readable multiple: ``1.2 M bytes``."""
    for prefix, factor in (("G ", 1e9), ("M ", 1e6), ("k ", 1e3)):
        if count >= factor:
            return f"{count / factor:.1f} {prefix}{unit}"
    return f"{int(count)} {unit}"
