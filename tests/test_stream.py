"""The socket pair between a session and a forked worker: messages arrive whole, in order,
large frames included, however the bytes are cut on the way."""

from __future__ import annotations

import os
import select
import socket
import threading

import pytest

from remotefn.protocol.socketpair import FrameStream, StreamClosed


def _messages() -> list[list[bytes]]:
    big = os.urandom(3 << 20)  # larger than the socket buffers: arrives in many reads
    return [[b"head"], [b"a", b"", b"c" * 70_000], [big, b"tail"], [b"x" * 10] * 3, [b"last"]]


def test_a_blocking_reader_gets_every_message_a_non_blocking_writer_sends():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    sender, receiver = FrameStream(ours), FrameStream(theirs)
    sent = _messages()
    received: list[list[bytes]] = []
    reader = threading.Thread(target=lambda: received.extend(
        [[bytes(f) for f in receiver.receive()] for _ in sent]))
    reader.start()
    for frames in sent:
        sender.send(frames)
    while not sender.flush():
        select.select([], [ours], [], 5)  # the reader drains the socket meanwhile
    reader.join(30)
    assert received == sent
    ours.close()
    with pytest.raises(StreamClosed):
        receiver.receive()
    theirs.close()


def test_a_non_blocking_reader_collects_messages_cut_at_every_byte():
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    receiver = FrameStream(theirs)
    sent = [[b"one", b"two" * 30_000], [b"three"], [bytes(range(256)) * 400]]
    wire_bytes = b"".join(b"".join(bytes(v) for v in FrameStream.encode(m)) for m in sent)
    received: list[list[bytes]] = []
    for position in range(0, len(wire_bytes), 997):
        ours.sendall(wire_bytes[position:position + 997])
        received.extend([bytes(f) for f in m] for m in receiver.receive_ready())
    assert received == sent
    ours.close()
    with pytest.raises(StreamClosed):
        receiver.receive_ready()
    theirs.close()


def test_large_frames_arrive_writable():
    ours, theirs = socket.socketpair()
    sender, receiver = FrameStream(ours), FrameStream(theirs)
    threading.Thread(target=sender.send_all, args=([b"h", bytes(1 << 20)],)).start()
    head, large = receiver.receive()
    assert bytes(head) == b"h" and len(large) == 1 << 20
    memoryview(large)[0] = 1  # no copy was needed to make it writable
    ours.close()
    theirs.close()
