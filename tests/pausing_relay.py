"""A TCP relay on 127.0.0.1 that stops forwarding a request after its first bytes, until released.

Put between a writer and a local S3 server, it holds an upload half sent for as long as a test needs, so the
test can kill the writer mid-upload. It reads into a small receive buffer, so once it stops reading the writer
blocks with at most a few MiB in its kernel buffers (what the kernel still delivers after the writer dies);
the test's upload must be larger than that. On release it forwards whatever arrives, then closes both sides
when the writer's side closes. Every socket has a timeout and every loop ends with the relay.
"""

import socket
import threading
import time
from dataclasses import dataclass

_TIMEOUT_S = 30.0
_RECEIVE_BUFFER = 64 * 1024


@dataclass
class Upload:
    """One relayed connection: its first request line, bytes forwarded to the server, whether it ended."""

    first_line: bytes = b""
    forwarded: int = 0
    closed: bool = False


class PausingRelay:
    """Forwards client -> server until `hold_after` bytes of a request starting with `method`, then holds."""

    def __init__(self, target_port: int, method: bytes, hold_after: int) -> None:
        self.target_port, self.method, self.hold_after = target_port, method, hold_after
        self.uploads: list[Upload] = []
        self._released = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)  # inherited on accept
        self._server.bind(("127.0.0.1", 0))
        self._server.listen()
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]

    def __enter__(self) -> "PausingRelay":
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._released.set()
        self._stop.set()
        self._server.close()
        for t in self._threads:
            t.join(timeout=10)

    def release(self) -> None:
        """Forward the rest of every held request."""
        self._released.set()

    def _spawn(self, target, *args) -> None:  # noqa: ANN001 - a thread body and its arguments
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=_TIMEOUT_S)
            client.settimeout(_TIMEOUT_S)
            upload = Upload()
            with self._lock:
                self.uploads.append(upload)
            self._spawn(self._client_to_server, client, upstream, upload)
            self._spawn(self._server_to_client, upstream, client)

    def _client_to_server(self, client: socket.socket, upstream: socket.socket, upload: Upload) -> None:
        try:
            while not self._stop.is_set():
                held = upload.first_line.startswith(self.method) and upload.forwarded >= self.hold_after
                if held and not self._released.is_set():
                    time.sleep(0.005)
                    continue
                data = client.recv(4096)
                if not data:
                    break
                if not upload.first_line:
                    upload.first_line = data.split(b"\r\n", 1)[0]
                upstream.sendall(data)
                upload.forwarded += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                s.close()
            upload.closed = True

    def _server_to_client(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                data = upstream.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass

    def held_upload(self, timeout: float = 120.0) -> Upload:
        """The request the relay is holding, once it holds one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for upload in self.uploads:
                    if upload.first_line.startswith(self.method) and upload.forwarded >= self.hold_after:
                        return upload
            time.sleep(0.01)
        raise TimeoutError(f"no {self.method!r} request reached {self.hold_after} bytes within {timeout} s")
