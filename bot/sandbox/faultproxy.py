"""A TCP proxy that tests put in front of a real server (OpenBao) to inject network faults.

    proxy = FaultProxy("127.0.0.1", bao_port).start()   # the bot's VAULT_ADDR = proxy.url
    proxy.refuse()      # Vault is down: connections refused at once, open ones reset
    proxy.cut()         # every open connection dropped now, mid-stream if need be
    proxy.slow(3)       # each chunk of an answer held 3 s (Vault did the work; the client waits)
    proxy.restore()     # pass-through again, on the same port

Faults are real at the socket level: the client sees ECONNREFUSED, a reset or a slow answer,
never a mock. Every thread is a daemon, every wait can be woken, and `stop()` returns at once.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["down", "up", "both"]

_CHUNK = 65536
# SO_LINGER on, 0 s: close() sends RST at once instead of FIN, the way a crashed peer or a
# dropped network path looks to the client (ECONNRESET, not a clean end of the answer).
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream twin, pumped by one thread."""

    client: socket.socket
    upstream: socket.socket | None = None
    closing: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def abort(self) -> None:
        """Reset both ends now; wakes the pump however it is blocked (select, send, delay)."""
        self.closing.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class FaultProxy:
    """A threaded TCP proxy on a free loopback port in front of `target_host:target_port`."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 64,
        connect_timeout: float = 5.0,
    ):
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.port = 0
        self.accepted = 0  # connections accepted in all: a fresh one after a cut shows here
        self._delay = 0.0
        self._direction: Direction = "down"
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._commands: queue.SimpleQueue[tuple[Callable[[], None], _Done]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    # ---- control -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def refuse(self, *, cut_open: bool = True) -> None:
        """New connections are refused (ECONNREFUSED at once, as from a stopped server);
        with `cut_open`, open ones are reset too, as when the server process dies."""
        self._run_in_loop(self._stop_listening)
        if cut_open:
            self.cut()

    def cut(self) -> None:
        """Reset every open connection now, mid-request or mid-answer alike. Idle pooled
        (keep-alive) connections die as well: the client's next request notices and
        opens a fresh one."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.abort()
        # Woken at once; waiting for them makes "cut" true when this returns.
        for link in links:
            if link.thread is not None and link.thread is not threading.current_thread():
                link.thread.join(1)

    def slow(self, seconds: float, *, direction: Direction = "down") -> None:
        """Hold each forwarded chunk `seconds` before passing it on. "down" (default) delays
        answers: the server has done the work when the client gives up, the nastier case;
        "up" delays requests, so the server sees them late; "both" does both."""
        with self._lock:
            self._delay = max(0.0, seconds)
            self._direction = direction

    def restore(self) -> None:
        """Pass-through again: listening on the same port, no delay. Connections cut before
        stay cut."""
        with self._lock:
            self._delay = 0.0
        self._run_in_loop(self._start_listening)

    def stop(self) -> None:
        """Stop listening, reset every connection, end every thread; returns at once."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self._commands.put((_STOP, _Done()))
            self._wake_w.send(b"x")
            self._thread.join(5)
        self.cut()
        self._close_listener()
        self._wake_r.close()
        self._wake_w.close()
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the accept loop -----------------------------------------------------------------

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The same port again after restore(), while reset connections linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        return sock

    def _run_in_loop(self, command: Callable[[], None]) -> None:
        """Run `command` on the accept thread (it alone touches the listening socket) and
        wait for it: once refuse() returns, no new connection gets through."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the proxy is not running")
        done = _Done()
        self._commands.put((command, done))
        self._wake_w.send(b"x")
        if not done.event.wait(5):
            raise RuntimeError("the proxy's accept loop did not answer")
        if done.error is not None:
            raise done.error

    def _stop_listening(self) -> None:
        self._close_listener()

    def _start_listening(self) -> None:
        if self._listener is None:
            self._listener = self._listen(self.port)

    def _close_listener(self) -> None:
        # Closing the listening socket is what makes the kernel answer RST to a SYN, so a
        # client's connect() fails at once with ECONNREFUSED instead of waiting.
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept_loop(self) -> None:
        while True:
            with selectors.DefaultSelector() as sel:
                sel.register(self._wake_r, selectors.EVENT_READ)
                if self._listener is not None:
                    sel.register(self._listener, selectors.EVENT_READ)
                ready = sel.select()
            for key, _ in ready:
                if key.fileobj is self._wake_r:
                    self._wake_r.recv(1024)
                    if not self._run_commands():
                        return
                elif self._listener is not None:
                    self._accept()

    def _run_commands(self) -> bool:
        """Run queued commands; False when one was stop."""
        keep_going = True
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return keep_going
            if command is _STOP:
                keep_going = False
                self._close_listener()
            else:
                try:
                    command()
                except OSError as e:
                    done.error = e
            done.event.set()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except OSError:
            return  # the client gave up between select and accept
        with self._lock:
            if len(self._links) < self.max_connections:
                link = _Link(client)
                link.thread = threading.Thread(
                    target=self._pump, args=(link,), name="fault-proxy-link", daemon=True
                )
                self._links.add(link)
                self.accepted += 1
                # Started under the lock: cut() never sees a link whose thread it cannot join.
                link.thread.start()
                return
        # Bounded: beyond the limit a connection is reset at once rather than queued.
        _Link(client).abort()
        client.close()

    # ---- one connection ------------------------------------------------------------------

    def _pump(self, link: _Link) -> None:
        try:
            self._connect_upstream(link)
            if link.upstream is not None and not link.closing.is_set():
                self._forward(link)
        except OSError:
            pass  # a reset or a cut: the connection is over either way
        finally:
            with self._lock:
                self._links.discard(link)
            if link.upstream is None:
                link.abort()  # upstream unreachable: the client sees a reset, not a hang
            link.client.close()
            if link.upstream is not None:
                link.upstream.close()

    def _connect_upstream(self, link: _Link) -> None:
        upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
        upstream.settimeout(None)
        link.upstream = upstream
        if link.closing.is_set():  # cut while connecting: abort() missed this socket
            link.abort()

    def _forward(self, link: _Link) -> None:
        assert link.upstream is not None
        peer = {link.client: link.upstream, link.upstream: link.client}
        with selectors.DefaultSelector() as sel:
            sel.register(link.client, selectors.EVENT_READ)
            sel.register(link.upstream, selectors.EVENT_READ)
            while not link.closing.is_set():
                for key, _ in sel.select():
                    src = key.fileobj
                    assert isinstance(src, socket.socket)
                    data = src.recv(_CHUNK)
                    if not data:
                        # A clean end is passed on as one (FIN). After the client's, the
                        # server may still finish its answer; after the server's, nothing
                        # more can come, and the client sees what a closed server shows.
                        peer[src].shutdown(socket.SHUT_WR)
                        if src is link.upstream:
                            return
                        sel.unregister(src)
                        continue
                    delay = self._delay_for(upstream_bound=src is link.client)
                    # Waiting on `closing` rather than sleeping: cut() and stop() end it.
                    if delay and link.closing.wait(delay):
                        return
                    peer[src].sendall(data)

    def _delay_for(self, *, upstream_bound: bool) -> float:
        with self._lock:
            if not self._delay:
                return 0.0
            if self._direction == "both" or self._direction == ("up" if upstream_bound else "down"):
                return self._delay
            return 0.0


@dataclass
class _Done:
    event: threading.Event = field(default_factory=threading.Event)
    error: OSError | None = None


def _stop_marker() -> None:
    """Stands for "stop" in the command queue."""


_STOP: Callable[[], None] = _stop_marker
