"""The one exception type of the data pipeline."""


class DataError(RuntimeError):
    """Bad input: a missing, corrupt, truncated or empty file, or a malformed list/label line.

    The message always names the offending file (and, for list files, the line), so that the
    error is actionable. Datasets built with ``on_error="skip"`` catch exactly this type.
    """


def error_message(error: DataError) -> str:
    """The message of ``error`` without the worker's traceback that a DataLoader prepends when it
    re-raises an error from a worker process ("Caught DataError in DataLoader worker ...")."""
    text = str(error)
    marker = f"{DataError.__name__}: "
    if text.startswith(f"Caught {DataError.__name__}") and marker in text:
        return text.rsplit(marker, 1)[1].strip()
    return text
