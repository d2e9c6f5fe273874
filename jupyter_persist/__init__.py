"""jupyter-persist: keep every notebook output on the server, with or without a browser."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import PersistExtension  # noqa: PLC0415 (keeps `import jupyter_persist` light)

    return [{"module": "jupyter_persist.app", "app": PersistExtension}]
