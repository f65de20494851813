"""The one exception type for user mistakes.

A `DessamError` carries a one-line message that names the file involved and what to do
about it. The command line prints it without a traceback and exits with status 2.
"""


class DessamError(Exception):
    """A problem with the user's input, files or settings (not a bug in dessam)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
