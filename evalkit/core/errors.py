"""The exception types that reach the user as a one-line message, and the 'did you mean' hint they carry."""

import difflib


class EvalkitError(Exception):
    """A problem with the user's input or environment, shown as one line and a non-zero exit."""

    exit_code = 2


class NotDownloadedError(EvalkitError):
    """Something a run needs (a dataset, a model) is neither here nor downloadable now; the message says the
    command that downloads it."""


class NotComparableError(EvalkitError):
    """Two runs cannot be compared; ``differences`` name each run.json field that differs."""

    def __init__(self, message: str, differences: list[dict]):
        super().__init__(message)
        self.differences = differences


def closest_names(name: str, candidates: list[str]) -> str:
    """A 'did you mean' suffix for an error message, or ''."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.4)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
