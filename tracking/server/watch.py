"""Bringing back the home's MLflow server when it dies under a running `gatelab submit|resume|train`.

gatelab started that server, so users expect gatelab to keep it up: a watcher thread checks every few seconds
that the recorded server's process is alive and, when it is gone (killed, crashed, out of memory), starts a new
one on the same port, so trials keep the URI they were given; their trackers send what they kept meanwhile
(tracking/runs/outbox.py). A server stopped on purpose (`stop_server` removes its record) is left stopped, and a
server that is alive but slow to answer is left alone.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from gatelab.tracking.server.process import ServerStartError, revive_server
from gatelab.tracking.store import Store

CHECK_EVERY_S = 2.0


class ServerWatch:
    """A daemon thread watching the server at `uri` of `store`; use as a context manager."""

    def __init__(self, store: Store, uri: str, *, on_restart: Callable[[str], None] | None = None) -> None:
        self.store, self.uri, self.on_restart = store, uri, on_restart
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mlflow-server-watch", daemon=True)

    def __enter__(self) -> ServerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def check(self) -> bool:
        """Restart the server if its process is gone; True when this call restarted it."""
        try:
            if not revive_server(self.store, self.uri):
                return False
        except ServerStartError as error:
            first_line = str(error).splitlines()[0]
            print(f"gatelab: the MLflow server at {self.uri} is gone and did not restart: {first_line}; trying again",
                  file=sys.stderr, flush=True)  # fmt: skip
            return False
        self.restarts += 1
        print(f"gatelab: the MLflow server at {self.uri} was gone; started it again", file=sys.stderr, flush=True)
        if self.on_restart is not None:
            self.on_restart(self.uri)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self.check()
            except Exception as error:  # noqa: BLE001 - a watcher must not die; say why and keep watching
                print(f"gatelab: warning: watching the MLflow server failed: {error}", file=sys.stderr, flush=True)
