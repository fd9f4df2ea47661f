"""``python -m remotefn.worker``: started by a session's backend, never by hand."""

import sys

from .startup import main

sys.exit(main())
