"""The one exception type users see: a one-line message that names the problem and the fix."""


class PyroLVMError(Exception):
    """A user-facing error. The CLI prints ``error: <message>`` and exits with status 2, never a traceback."""


class Interrupted(PyroLVMError):
    """Training stopped by a signal (SIGINT, SIGTERM, SIGUSR1) after finishing its step and writing a checkpoint at
    that step. The CLI prints the message (no ``error:``) and exits with ``exit_code`` = 128 + the signal's number,
    as shells report a process a signal ended (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
