"""A kernel of the server's kernel manager, or None once it is gone."""

from __future__ import annotations

from typing import Any

from tornado.web import HTTPError


def find_kernel(kernel_manager: Any, kernel_id: str) -> Any | None:
    """The kernel's manager, or None if the kernel manager no longer has it.

    jupyter_client's MultiKernelManager says so with a KeyError; jupyter_server's
    MappingKernelManager with a 404 HTTPError (seen: ``GET /api/persist/status`` failed
    with a 404 while a kernel stopped).
    """
    try:
        return kernel_manager.get_kernel(kernel_id)
    except KeyError:
        return None
    except HTTPError as err:
        if err.status_code == 404:
            return None
        raise
