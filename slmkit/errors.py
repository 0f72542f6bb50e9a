"""The one exception type a user can cause: the CLI prints it as a single line and exits non-zero."""


class SlmError(Exception):
    """Bad input a user can fix: the message says what is wrong and, where useful, what to do."""
