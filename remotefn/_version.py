"""The installed remotefn version (the wire protocol's: ``protocol.messages.PROTOCOL_VERSION``)."""

__version__ = "0.1.0"
