"""A TCP proxy on loopback that breaks the network between the pool and a real server on
demand (cf. asyncpg's test_adversity.py).

    proxy = FaultProxy("127.0.0.1", server_port); proxy.start()
    url = f"mysql://user:pw@127.0.0.1:{proxy.port}/db"
    proxy.cut()        # close every proxied socket (the server or a middlebox reset them)
    proxy.blackhole()  # stop forwarding, keep every socket open (a half-open network)
    proxy.delay(0.2)   # forward each chunk 0.2 s late
    proxy.restore()    # forward again, at once
    proxy.down()       # refuse new connections (nothing listens: the server is down)
    proxy.up()         # listen again, on the same port

Each proxied connection is a pair of sockets with one pump thread per direction. A pump
that is told to hold (blackhole) keeps what it read and sends it on restore, as TCP
retransmits after a network comes back. Only loopback addresses are used.
"""

from __future__ import annotations

import socket
import threading
import time


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        if not upstream_host.startswith("127.") and upstream_host != "localhost":
            raise ValueError("FaultProxy only proxies to loopback")
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._delay = 0.0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self._closed = False
        self.port = 0
        self.accepted = 0  # connections accepted since start

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._listen(0)
        return self

    def _listen(self, port: int) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port))
        ls.listen(128)
        self.port = ls.getsockname()[1]
        with self._lock:
            self._listener = ls
        threading.Thread(target=self._accept_loop, args=(ls,), name="faultproxy-accept", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self.down()
        self.cut()
        self._forwarding.set()

    # ---- faults --------------------------------------------------------------------
    def cut(self) -> int:
        """Close every proxied connection, both sides. Returns how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                _shut(s)
        return len(pairs)

    def blackhole(self) -> None:
        """Stop forwarding in both directions; sockets stay open, data waits."""
        self._forwarding.clear()

    def delay(self, seconds: float) -> None:
        self._delay = seconds
        self._forwarding.set()

    def restore(self) -> None:
        self._delay = 0.0
        self._forwarding.set()

    def down(self) -> None:
        """Stop listening: new connections are refused, as by a server that is down."""
        with self._lock:
            ls, self._listener = self._listener, None
        if ls is not None:
            _shut(ls)

    def up(self) -> None:
        if self._listener is None and not self._closed:
            self._listen(self.port)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    # ---- plumbing ------------------------------------------------------------------
    def _accept_loop(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return  # down() or close()
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                _shut(client)  # the real server is down too
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, server))
                self.accepted += 1
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="faultproxy-pump",
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                self._forwarding.wait()
                data = src.recv(65536)
                if not data:
                    break
                # Held while blackholed; delivered when the network comes back.
                self._forwarding.wait()
                if self._delay:
                    time.sleep(self._delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # One side ended: end the other as a network would (EOF / reset).
            with self._lock:
                self._pairs = [p for p in self._pairs if src not in p]
            _shut(src)
            _shut(dst)


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
