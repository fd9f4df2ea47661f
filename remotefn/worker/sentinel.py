"""The sentinel of a local session without a fork server: ``python -m remotefn.worker.sentinel
FD``. It waits for the session's end of the pipe ``FD`` to close (the session ended, or was
killed), then ends every process that carries the session's mark (see
``protocol.launch.end_marked``): what calls started and left running, also of workers that
had ended. A session with a fork server needs none: the fork server does the same.
"""

from __future__ import annotations

import os
import sys

from ..protocol.launch import MARK, end_marked


def main() -> int:
    pipe = int(sys.argv[1])
    while True:
        try:
            if not os.read(pipe, 512):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    session = os.environ.get(MARK)
    if session:
        end_marked(session=session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
