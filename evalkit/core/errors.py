"""The one exception type that reaches the user as a one-line message."""


class EvalkitError(Exception):
    """A problem with the user's input or environment, shown as one line and a non-zero exit."""

    exit_code = 2


class NotComparableError(EvalkitError):
    """Two runs cannot be compared; ``differences`` name each run.json field that differs."""

    def __init__(self, message: str, differences: list[dict]):
        super().__init__(message)
        self.differences = differences
