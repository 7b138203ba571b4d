"""Serving a `socketserver` server in a thread that stops at once, for the sandbox's servers.

`serve_forever()` checks for shutdown only between polls (0.5 s by default), so every test
that stopped a server waited for the next poll. Here the loop waits on the listening socket
and on a wake-up socket together: `stop()` wakes it and returns as soon as it has exited.
"""

from __future__ import annotations

import selectors
import socket
import socketserver
import threading


class ServerThread:
    """Runs `server` (any `socketserver.BaseServer`, werkzeug's too) in a daemon thread."""

    def __init__(self, server: socketserver.BaseServer, name: str = "sandbox-server"):
        self.server = server
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.server, selectors.EVENT_READ)  # type: ignore[arg-type]
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = sel.select()
                if any(key.fileobj is self._wake_r for key, _ in ready):
                    return
                # The same accept-and-dispatch step serve_forever() takes; a threading
                # server hands the connection to its own thread and comes straight back.
                self.server._handle_request_noblock()  # type: ignore[attr-defined]
                self.server.service_actions()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close the listening socket. Requests in flight finish in their
        own (daemon) threads; nothing waits for them."""
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join(timeout)
        self.server.server_close()
        self._wake_r.close()
        self._wake_w.close()
