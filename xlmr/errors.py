"""The one exception type that reaches the user as a single line (CLI exit code 2)."""


class XlmrError(Exception):
    """A problem with the user's input: a file, a config or an argument. str() is the whole message."""
