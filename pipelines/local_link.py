"""Messages between the pipeline's actors on one host, over a Unix socket instead of Ray calls.

A Ray actor call costs about 2.3 ms of CPU on each side on the project's 2-core reference
machine, whatever its payload (`benchmarks/ray_calls.py`; 1 KB and 230 KB alike), and ~3 ms
from call to start. Two hops of the live path use a local link when both ends share a host:

- sensor -> fuser: a sensor writes its frames to a socket its fuser listens on (`FrameServer`,
  `FrameClient`); across hosts, or whenever the socket cannot be used, frames go as Ray calls
  (`FuserActor.push_from`).
- fuser -> inference actor: a fuser writes each fused sample to a socket the inference actor
  listens on, and the prediction comes back on the same connection (`LinkServer` with replies,
  `LinkClient` with a reader); across hosts, or once that socket breaks, as Ray calls.

Ray still places, starts, watches and restarts the actors. A link carries one length-prefixed
pickle per message, each connection read by a thread of its own, so one sender's order is kept.
The socket lives in a directory only this user can enter, and only the pipeline's own
processes connect to it: the pickles are those Ray itself would have carried. A malformed
message (corrupt length, undecodable, of the wrong type) drops that connection only, and says
why in `errors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from fusion.sample import Frame

log = logging.getLogger(__name__)
_HEADER = struct.Struct("!Q")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # a corrupt length must not allocate the machine away

Reply = Callable[[Any], None]
# Says what is wrong with a received message (None: nothing); the wrong message drops its connection.
Check = Callable[[Any], str | None]


class LinkError(RuntimeError):
    """The other end of a local link is gone, or sent something malformed."""


def frames_check(message: Any) -> str | None:
    if not isinstance(message, list) or not all(isinstance(f, Frame) for f in message):
        return f"expected a list of Frames, got {type(message).__name__}"
    return None


class LinkServer:
    """Listens on a fresh Unix socket; each connection's messages go to `deliver(message, reply)`
    in order, where `reply(message)` sends one back on that connection (from any thread).

    One thread per connection, so a slow `deliver` holds back only the senders waiting on it
    (their sockets fill: a sensor's device buffer then overruns, counted).
    """

    def __init__(self, deliver: Callable[[Any, Reply], None], *, check: Check, name: str) -> None:
        self._deliver = deliver
        self._check = check
        self._dir = tempfile.mkdtemp(prefix=f"fusion-{name}-")  # mode 0700: this user only
        self.path = os.path.join(self._dir, "link.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(16)
        self.errors: list[str] = []  # why connections were dropped
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, name=f"{name}-link", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="link-reader", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        lock = threading.Lock()

        def reply(message: Any) -> None:
            with lock:
                _send(conn, message, "the sender")

        try:
            with conn:
                while not self._closed.is_set():
                    try:
                        message = _receive(conn, self._check)
                    except EOFError:
                        return  # the sender closed its end (stopped, or its actor died)
                    except (OSError, LinkError) as err:
                        if not self._closed.is_set():
                            self.errors.append(str(err))
                            log.warning("local link: %s; connection dropped", err)
                        return
                    self._deliver(message, reply)
        finally:
            self._conns.discard(conn)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        for conn in list(self._conns):  # senders see the link gone, as when the process dies
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        shutil.rmtree(self._dir, ignore_errors=True)


class LinkClient:
    """A sender's end: `send(message)` blocks while the receiver is behind (the socket is full).

    With `on_reply`, a thread reads what the server sends back (checked by `check`) and hands
    each message to `on_reply`; when the connection ends (the server's actor died, or it sent
    something malformed) `on_closed(reason)` is called once, unless `close()` ended it.
    """

    def __init__(
        self,
        path: str,
        *,
        peer: str = "fuser",
        on_reply: Callable[[Any], None] | None = None,
        on_closed: Callable[[str], None] | None = None,
        check: Check | None = None,
    ) -> None:
        self.peer = peer
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._lock = threading.Lock()
        self._closing = False
        try:
            self._sock.connect(path)
        except OSError as err:
            self._sock.close()
            raise LinkError(f"cannot connect to the {peer}'s local link {path}: {err}") from None
        if on_reply is not None:
            threading.Thread(
                target=self._read,
                args=(on_reply, on_closed, check or (lambda _: None)),
                name=f"{peer}-link-replies",
                daemon=True,
            ).start()

    def send(self, message: Any) -> None:
        with self._lock:
            _send(self._sock, message, f"the {self.peer}")

    def _read(
        self, on_reply: Callable[[Any], None], on_closed: Callable[[str], None] | None, check: Check
    ) -> None:
        reason = f"the {self.peer} closed the link"
        try:
            while True:
                on_reply(_receive(self._sock, check))
        except EOFError:
            pass
        except (OSError, LinkError) as err:
            reason = f"the {self.peer}'s link failed: {err}"
        if on_closed is not None and not self._closing:
            on_closed(reason)

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()


class FrameServer(LinkServer):
    """A fuser's end of its sensors' links: every connection's frame lists go to `deliver`."""

    def __init__(self, deliver: Callable[[list[Frame]], None], name: str = "fuser") -> None:
        super().__init__(lambda frames, _reply: deliver(frames), check=frames_check, name=name)


class FrameClient(LinkClient):
    """A sensor's end: `send(frames)` blocks while the fuser is behind (the socket is full)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, peer="fuser")


def _send(sock: socket.socket, message: Any, peer: str) -> None:
    payload = pickle.dumps(message, protocol=5)
    try:
        sock.sendall(_HEADER.pack(len(payload)) + payload)
    except OSError as err:
        raise LinkError(f"{peer}'s local link is gone: {err}") from None


def _receive(conn: socket.socket, check: Check) -> Any:
    (size,) = _HEADER.unpack(_exactly(conn, _HEADER.size, eof_ok=True))
    if size > MAX_MESSAGE_BYTES:
        raise LinkError(f"message of {size} bytes announced, more than {MAX_MESSAGE_BYTES}: malformed")
    try:
        message = pickle.loads(_exactly(conn, size, eof_ok=False))
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as err:
        raise LinkError(f"undecodable message of {size} bytes: {err}") from None
    if (wrong := check(message)) is not None:
        raise LinkError(wrong)
    return message


def _exactly(conn: socket.socket, n: int, *, eof_ok: bool) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = conn.recv_into(view[got:])
        if k == 0:
            if got == 0 and eof_ok:
                raise EOFError
            raise LinkError(f"connection closed after {got} of {n} bytes")
        got += k
    return buf
