"""The one error type that means "the user asked for something we cannot do".

The CLI turns a :class:`UserError` into one line on stderr and exit code 2, never a traceback.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input (a flag, a path, a malformed source), with what to do next."""

    exit_code = 2
