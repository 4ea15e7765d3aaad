"""The one exception type of the data pipeline."""


class DataError(RuntimeError):
    """Bad input: a missing, corrupt, truncated or empty file, or a malformed list/label line.

    The message always names the offending file (and, for list files, the line), so that the
    error is actionable. Datasets built with ``on_error="skip"`` catch exactly this type.
    """
