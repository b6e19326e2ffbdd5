"""The one exception type users see: a one-line message that names the problem and the fix."""


class PyroLVMError(Exception):
    """A user-facing error. The CLI prints ``error: <message>`` and exits with status 2, never a traceback."""
