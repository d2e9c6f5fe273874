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
from traitlets import Unicode

from .. import __version__
from ..app import PersistExtension
from ..journal import Journal
from ..ondisk import candidate_api_paths
from ..textlog import TextLog


class CommandError(Exception):
    """An expected failure: shown as one line, and the command exits with status 1."""


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

    def start(self) -> None:
        """Run the command; an expected failure is one line on stderr and status 1."""
        try:
            self.run()
        except CommandError as err:
            print(f"jupyter persist {self.name.split()[-1]}: error: {err}", file=sys.stderr)
            self.exit(1)
        except KeyboardInterrupt:
            self.exit(130)

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
