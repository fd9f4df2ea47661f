"""The exceptions remotefn raises, all under :class:`RemoteFnError`."""

from __future__ import annotations


class RemoteFnError(Exception):
    """Base class of every error remotefn raises on its own account."""


class WorkerDied(RemoteFnError):
    """The worker running a call exited before returning its result."""


class WorkerStartError(RemoteFnError):
    """A worker could not be started, or its ``init`` function raised.

    ``stderr`` holds what the worker wrote to its standard error, if anything.
    """

    def __init__(self, message: str, stderr: str = "") -> None:
        if stderr.strip():
            message = f"{message}\n--- worker stderr ---\n{stderr.rstrip()}"
        super().__init__(message)
        self.stderr = stderr


class CallTimeout(RemoteFnError, TimeoutError):
    """A call ran longer than its ``timeout``; its worker was stopped and replaced."""


class DependencyError(RemoteFnError):
    """A future passed as an argument failed or was cancelled, so the call never ran.

    ``__cause__`` is the upstream exception.
    """


class SerializationError(RemoteFnError, TypeError):
    """An argument, result or exception could not be pickled or unpickled."""


class ProtocolError(WorkerStartError):
    """A worker spoke another protocol or remotefn version than its session."""


class RemoteError(RemoteFnError):
    """A remote exception that could not be sent back as itself (it did not pickle)."""


class RemoteTraceback(Exception):
    """Carries the text of a remote traceback; attached as ``__cause__`` of a call's error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class MissingDependency(RemoteFnError, ImportError):
    """An option needs software that is not installed (the message says how to install it)."""
