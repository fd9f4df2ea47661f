"""A worker that misbehaves before it serves, driven by FAKE_MODE; see test_security.py.

Started by a session in place of ``python -m remotefn.worker`` (the session's ``python``
setting points at a wrapper script), so it receives the real address, secret and identity.
"""

from __future__ import annotations

import os
import pickle
import sys

from remotefn.protocol import launch, messages
from remotefn.protocol.framing import KEY_SIZE, Channel
from remotefn.protocol.messages import Kind
from remotefn.worker.loop import Worker


def hello_message(**versions):
    return messages.hello(os.getpid(), "fake-host", **versions)


class Evil:
    """Unpickling this creates the file named by FAKE_MARKER."""

    def __reduce__(self):
        return (open, (os.environ["FAKE_MARKER"], "w"))


def main() -> None:
    mode = os.environ["FAKE_MODE"]
    address = os.environ.pop(launch.ADDRESS)
    key = bytes.fromhex(os.environ.pop(launch.KEY))
    identity = os.environ.pop(launch.WORKER).encode()
    server_key = os.environ.pop(launch.SERVER_KEY).encode()
    worker = Worker(address, server_key, key, identity)
    evil = pickle.dumps(Evil()) if "FAKE_MARKER" in os.environ else b""
    if mode == "forged":
        wrong_key = Channel(b"k" * KEY_SIZE, identity, session_side=False)
        worker.socket.send_multipart(wrong_key.seal(Kind.HELLO, hello_message()))
        _, body = messages.result(messages.Usage(0, 0, -1, (0.0,)), (0, [evil]))
        worker.socket.send_multipart(wrong_key.seal(Kind.RESULT, body, call_id=1))
        frames = worker.channel.seal(Kind.HELLO, [*hello_message(), evil])
        tampered = bytearray(frames[0])
        tampered[-40] ^= 1  # one bit of the pickle flipped after sealing
        worker.socket.send_multipart([bytes(tampered)])
        worker.serve()
    elif mode == "replayed":
        hello = worker.channel.seal(Kind.HELLO, hello_message())
        worker.socket.send_multipart(hello)
        worker.socket.send_multipart(hello)
        worker.loop()
    elif mode == "old-version":
        worker.send(Kind.HELLO, hello_message(version="0.0.1", protocol=0))
        worker.loop()
    worker.close()


if __name__ == "__main__":
    sys.exit(main())
