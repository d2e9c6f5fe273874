"""pytest plugin: every ServerApp a test suite starts loads jupyter_persist.

For running jupyter_server's own test suite with the extension (``.ci/upstream/run``):
the extension is added to ``jpserver_extensions`` once the server has found its
extensions, whatever the test configured, and a server in which it did not load fails
the test (a broken import is otherwise only logged), and so does an IOPub reader process
of the extension left running after the test's server was cleaned up.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jupyter_server.serverapp import ServerApp

# The check that no IOPub reader process outlives its server, shared with this
# project's own suite (appended: nothing of jupyter_server's is shadowed).
sys.path.append(str(Path(__file__).resolve().parents[2] / "tests"))
from reader_leaks import pytest_runtest_teardown  # noqa: F401

_init_server_extensions = ServerApp.init_server_extensions
_load_server_extensions = ServerApp.load_server_extensions


def init_server_extensions(self: ServerApp) -> None:
    self.jpserver_extensions = {**self.jpserver_extensions, "jupyter_persist": True}
    _init_server_extensions(self)


def load_server_extensions(self: ServerApp) -> None:
    _load_server_extensions(self)
    loaded = "jupyter_persist" in self.extension_manager.extension_apps
    if not loaded or "jupyter_persist_capture" not in self.web_app.settings:
        raise RuntimeError("jupyter_persist did not load in this ServerApp (see its log)")


ServerApp.init_server_extensions = init_server_extensions  # type: ignore[method-assign]
ServerApp.load_server_extensions = load_server_extensions  # type: ignore[method-assign]
