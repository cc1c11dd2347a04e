"""The one exception type that reaches the user as a one-line message."""


class EvalkitError(Exception):
    """A problem with the user's input or environment, shown as one line and a non-zero exit."""

    exit_code = 2
