"""``tinkerplug serve``'s app under uvicorn on a thread of this process: the same routes and
checks as the command, without a process to spawn (tests, notebooks, the conformance script)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any


class ThreadServer:
    """``ThreadServer(dir, api_keys=[...])``; ``url`` once it answers; ``stop()`` when done.
    ``api_keys``: a list of keys, or a ``principals.Keyring`` (named keys, admins, limits)."""

    def __init__(self, checkpoint_dir: Path, api_keys: Any = None, device: str | None = "cpu", **options: Any):
        import uvicorn

        from tinkerplug_local.server.app import create_app
        from tinkerplug_local.server.state import ServerState

        self.state = ServerState(Path(checkpoint_dir), device=device, **options)
        with socket.socket() as s:  # a free loopback port
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.app = create_app(self.state, api_keys if api_keys is not None else [])
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="error")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="tinkerplug-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("tinkerplug serve did not start on its thread")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self.state.close()

    def __enter__(self) -> "ThreadServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
