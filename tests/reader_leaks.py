"""The extension's IOPub reader process ends with the server that started it.

A pytest plugin for this suite (``tests/conftest.py``) and for jupyter_server's own
tests run with the extension (``.ci/upstream/persist_everywhere.py``): after each
test's teardown, once its servers are cleaned up (pytest-jupyter's own autouse
fixture cleans the server up, so this runs after every fixture, not as one), no
reader process of this pytest process may be left.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import psutil
import pytest

READER_MODULE = "jupyter_persist.kernels.readloop"


def reader_processes() -> list[psutil.Process]:
    """This process's children that are IOPub readers."""
    found = []
    for child in psutil.Process().children():
        try:
            if READER_MODULE in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # ended meanwhile
            continue
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Any) -> Generator[None, None, None]:
    """Fail the test's teardown if a reader process outlived its server."""
    result = yield
    deadline = time.monotonic() + 10
    while readers := reader_processes():
        if time.monotonic() > deadline:
            raise AssertionError(f"IOPub reader processes left running: {readers}")
        time.sleep(0.1)
    return result
