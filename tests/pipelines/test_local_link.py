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
from pipelines.local_link import FrameClient, FrameServer, LinkClient, LinkError, LinkServer


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


def _echo_server():
    """An inference actor's end in miniature: every message is answered on its connection."""

    def deliver(message, reply):
        reply(("prediction", message, f"answer {message}"))

    return LinkServer(deliver, check=lambda m: None if isinstance(m, int) else "expected an int", name="test")


def test_replies_come_back_on_the_senders_connection_in_order():
    server = _echo_server()
    answers: dict[str, list] = {"a": [], "b": []}
    done = threading.Event()

    def on_reply(who):
        def got(message):
            answers[who].append(message)
            if sum(map(len, answers.values())) == 40:
                done.set()

        return got

    try:
        clients = {who: LinkClient(server.path, peer="echo", on_reply=on_reply(who)) for who in answers}
        for i in range(20):
            clients["a"].send(i)
            clients["b"].send(100 + i)
        assert done.wait(10)
        assert answers["a"] == [("prediction", i, f"answer {i}") for i in range(20)]
        assert answers["b"] == [("prediction", 100 + i, f"answer {100 + i}") for i in range(20)]
        for client in clients.values():
            client.close()
    finally:
        server.close()


def test_the_sender_hears_once_when_the_other_end_dies_and_not_when_it_closes_itself():
    closed: list[str] = []
    server = _echo_server()
    client = LinkClient(
        server.path, peer="inference actor 0", on_reply=lambda m: None, on_closed=closed.append
    )
    server.close()  # as when the actor's process dies: its sockets are shut
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == ["the inference actor 0 closed the link"]
    client.close()

    server = _echo_server()
    mine: list[str] = []
    quiet = LinkClient(server.path, peer="x", on_reply=lambda m: None, on_closed=mine.append)
    quiet.close()
    time.sleep(0.2)
    assert mine == []  # closing one's own end is not news
    server.close()


def test_a_malformed_reply_ends_the_link_and_says_why():
    def deliver(message, reply):
        reply({"not": "a reply"})

    server = LinkServer(deliver, check=lambda m: None, name="test")
    closed: list[str] = []
    try:
        client = LinkClient(
            server.path,
            peer="inference actor 0",
            on_reply=lambda m: None,
            on_closed=closed.append,
            check=lambda m: None if isinstance(m, tuple) else f"expected a reply, got {type(m).__name__}",
        )
        client.send(1)
        deadline = time.monotonic() + 5
        while not closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(closed) == 1 and "expected a reply, got dict" in closed[0]
        client.close()
    finally:
        server.close()
