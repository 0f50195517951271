"""The one exception type that users see.

Library code raises :class:`StylerigError` for every problem a user can fix (bad input,
missing asset, wrong checkpoint). Its message is a single line that says what went wrong
and what to do. The CLI prints it as ``error: <message>`` and exits with status 1; any
other exception is a bug and keeps its traceback.
"""


class StylerigError(Exception):
    """A user-facing error with a one-line, actionable message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class AssetError(StylerigError):
    """A pretrained asset is missing, corrupt, unlicensed or cannot be fetched."""


class StylerigWarning(UserWarning):
    """Something the user should know (a very large photo, metadata an output cannot keep); the CLI prints
    it as one ``warning: <message>`` line."""
