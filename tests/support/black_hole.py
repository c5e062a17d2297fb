"""A service that hangs: it takes every connection and never answers a byte."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class BlackHole:
    """A TCP server on a free loopback port that accepts connections and never answers.

    What a client meets when a server's process is frozen or a network path drops the answers:
    connecting works, then nothing comes back until the client's own timeout. `accepted` counts
    the connections taken, so a test can wait until clients are stuck on it.
    """

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1024)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed by close()
                return
            with self._lock:
                self._held.append(connection)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            for connection in self._held:
                with contextlib.suppress(OSError):
                    connection.close()
            self._held.clear()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
