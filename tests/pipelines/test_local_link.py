"""The local link: frames from a sensor to its fuser on one host over a Unix socket, no Ray."""

import pickle
import socket
import stat
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fusion.sample import Frame, Modality
from pipelines.local_link import FrameClient, FrameServer, LinkError


def _frame(i: int) -> Frame:
    data = np.full((240, 320, 3), i % 256, np.uint8)
    return Frame(
        modality=Modality.CAMERA, sensor_id="cam0", timestamp=i / 30, wall_time=i / 30, data=data, index=i
    )


def _collecting_server():
    got: list[list[Frame]] = []
    done = threading.Event()

    def deliver(frames):
        got.append(frames)
        if len(got) >= 50:
            done.set()

    return FrameServer(deliver, name="test"), got, done


def test_frames_arrive_whole_and_in_order_from_each_sensor():
    server, got, done = _collecting_server()
    try:
        clients = [FrameClient(server.path) for _ in range(2)]
        for i in range(25):
            for c, client in enumerate(clients):
                client.send([_frame(2 * i + c)])
        assert done.wait(10)
        for c in range(2):  # each sensor's own order is kept, however the two interleave
            mine = [fs[0].index for fs in got if fs[0].index % 2 == c]
            assert mine == list(range(c, 50, 2))
        assert all(np.array_equal(fs[0].data, _frame(fs[0].index).data) for fs in got)
        for client in clients:
            client.close()
    finally:
        server.close()


def test_the_socket_is_private_and_goes_with_the_server():
    server, _, _ = _collecting_server()
    folder = Path(server.path).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # no other user can reach the socket
    server.close()
    assert not folder.exists()
    with pytest.raises(LinkError, match="cannot connect"):
        FrameClient(server.path)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (struct.pack("!Q", 1 << 40), "more than"),  # a corrupt length
        (struct.pack("!Q", 4) + b"junk", "undecodable"),
        (struct.pack("!Q", len(p := pickle.dumps({"not": "frames"}))) + p, "expected a list of Frames"),
    ],
)
def test_a_malformed_message_drops_that_connection_only(payload, error):
    server, got, _ = _collecting_server()
    try:
        bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bad.connect(server.path)
        bad.sendall(payload)
        good = FrameClient(server.path)
        good.send([_frame(7)])
        deadline = time.monotonic() + 5
        while (not server.errors or not got) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert error in server.errors[0]
        assert [fs[0].index for fs in got] == [7]  # the other sensor's frames still arrive
        bad.close()
        good.close()
    finally:
        server.close()


def test_a_sender_learns_when_the_fuser_is_gone():
    server, _, _ = _collecting_server()
    client = FrameClient(server.path)
    server.close()
    time.sleep(0.1)
    with pytest.raises(LinkError, match="gone"):
        for i in range(200):  # the first writes may still land in the socket's buffer
            client.send([_frame(i)])
