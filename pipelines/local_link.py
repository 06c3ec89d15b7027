"""Frames from a sensor actor to its fuser on the same host, over a Unix socket.

A Ray actor call costs about 2.3 ms of CPU on each side on the project's 2-core reference
machine, whatever its payload (`benchmarks/ray_calls.py`; 1 KB and 230 KB alike). At 60
frames a second that is a quarter of a core spent on messages before a tick is even aligned.
When a sensor and its fuser share a host, a sensor writes its frames to a stream socket the
fuser listens on instead: one length-prefixed pickle per hand-over, read by a thread of the
fuser. Ray still places, starts, watches and restarts the actors; across hosts, and whenever
the socket cannot be used, frames go as Ray calls (`FuserActor.push_from`).

The socket lives in a directory only this user can enter, and only the pipeline's own
processes connect to it: the pickles are those Ray itself would have carried.
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

from fusion.sample import Frame

log = logging.getLogger(__name__)
_HEADER = struct.Struct("!Q")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # a corrupt length must not allocate the machine away


class LinkError(RuntimeError):
    """The fuser's end of a local link is gone or sent something that is not frames."""


class FrameServer:
    """Listens on a fresh Unix socket; every connection's frames go to `deliver`, in order.

    One thread per connected sensor, so one sensor's order is kept and a slow `deliver` holds
    back only the sensors waiting on it (their sockets fill, their devices' buffers overrun).
    """

    def __init__(self, deliver: Callable[[list[Frame]], None], name: str = "fuser") -> None:
        self._deliver = deliver
        self._dir = tempfile.mkdtemp(prefix=f"fusion-{name}-")  # mode 0700: this user only
        self.path = os.path.join(self._dir, "frames.sock")
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
        try:
            with conn:
                while not self._closed.is_set():
                    try:
                        frames = _receive(conn)
                    except EOFError:
                        return  # the sensor closed its end (stopped, or its actor died)
                    except (OSError, LinkError) as err:
                        if not self._closed.is_set():
                            self.errors.append(str(err))
                            log.warning("local link: %s; connection dropped", err)
                        return
                    self._deliver(frames)
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


class FrameClient:
    """A sensor's end: `send(frames)` blocks while the fuser is behind (the socket is full)."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
        except OSError as err:
            self._sock.close()
            raise LinkError(f"cannot connect to the fuser's local link {path}: {err}") from None

    def send(self, frames: list[Frame]) -> None:
        payload = pickle.dumps(frames, protocol=5)
        try:
            self._sock.sendall(_HEADER.pack(len(payload)) + payload)
        except OSError as err:
            raise LinkError(f"the fuser's local link is gone: {err}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


def _receive(conn: socket.socket) -> list[Frame]:
    (size,) = _HEADER.unpack(_exactly(conn, _HEADER.size, eof_ok=True))
    if size > MAX_MESSAGE_BYTES:
        raise LinkError(f"message of {size} bytes announced, more than {MAX_MESSAGE_BYTES}: not a frame list")
    try:
        frames = pickle.loads(_exactly(conn, size, eof_ok=False))
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as err:
        raise LinkError(f"undecodable message of {size} bytes: {err}") from None
    if not isinstance(frames, list) or not all(isinstance(f, Frame) for f in frames):
        raise LinkError(f"expected a list of Frames, got {type(frames).__name__}")
    return frames


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
