"""The installed remotefn version and the wire protocol version."""

__version__ = "0.1.0"

#: Bumped whenever the message layout changes; workers of another protocol are refused.
PROTOCOL_VERSION = 1
