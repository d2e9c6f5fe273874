"""The Jupyter Server extension: configuration, wiring and lifecycle."""

from __future__ import annotations

from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, TraitError, validate

from .capture import CONTENTS_SCHEMA, KERNEL_ACTIONS_SCHEMA, CaptureManager
from .websocket import SETTINGS_KEY, compose_connection_class


class PersistExtension(ExtensionApp):
    """Keeps every notebook output on the server, whether or not a browser is connected."""

    name = "jupyter_persist"
    load_other_extensions = True

    save_interval = Float(
        5.0,
        config=True,
        help="""Seconds between writes of a notebook's captured outputs while no client is
        attached to its kernel. The first write happens at most this long after the last
        client leaves; later ones every this many seconds while output keeps arriving, and
        at once when an execution ends. Must be greater than 0.""",
    )

    @validate("save_interval")
    def _validate_save_interval(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if not value > 0:
            raise TraitError(f"PersistExtension.save_interval must be > 0 seconds, got {value!r}")
        return value

    def initialize_settings(self) -> None:
        """Build the capture manager and put it where the kernel websockets find it."""
        serverapp = self.serverapp
        assert serverapp is not None
        self.capture = CaptureManager(
            parent=self,
            log=serverapp.log,
            kernel_manager=serverapp.kernel_manager,
            session_manager=serverapp.session_manager,
            contents_manager=serverapp.contents_manager,
            save_interval=self.save_interval,
        )
        configured = self.settings.get("kernel_websocket_connection_class")
        if configured is None:
            configured = serverapp.kernel_websocket_connection_class
        composed = compose_connection_class(configured)
        self.settings["kernel_websocket_connection_class"] = composed
        self.settings[SETTINGS_KEY] = self.capture
        # Composes with an admin's own ContentsManager.pre_save_hook, which runs first.
        serverapp.contents_manager.register_pre_save_hook(self.capture.on_pre_save)
        event_logger = serverapp.event_logger
        assert event_logger is not None
        event_logger.add_listener(
            schema_id=KERNEL_ACTIONS_SCHEMA, listener=self.capture.on_kernel_action
        )
        event_logger.add_listener(
            schema_id=CONTENTS_SCHEMA, listener=self.capture.locator.on_contents_event
        )
        serverapp.log.info(
            "jupyter_persist: capturing kernel outputs; save_interval=%ss; websocket class %s",
            self.save_interval,
            f"{configured.__module__}.{configured.__qualname__}",
        )

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start the flush loop once the server's event loop runs."""
        self.capture.start()

    async def stop_extension(self) -> None:
        """Write what is still unwritten and release every kernel subscription."""
        capture = getattr(self, "capture", None)
        if capture is not None:
            await capture.stop()
