"""What ``python -m atm_core.train`` and ``python -m atm_core.evaluate`` share: one clean line for
the errors a user can fix, exit code 2."""
from __future__ import annotations

import sys
from collections.abc import Callable

from ..data.errors import DataError, error_message
from .checkpoint import DiskFullError
from .config import ConfigError

USER_ERRORS = {ConfigError: "configuration error", DataError: "data error", DiskFullError: "error"}


def run_reporting_errors(job: Callable[[], dict], debug: bool = False) -> dict:
    """``job()``; a configuration, data or full-disk error is printed as one line (the traceback
    too with ``debug``) and exits with code 2."""
    try:
        return job()
    except tuple(USER_ERRORS) as e:
        if debug:
            raise
        kind = next(label for cls, label in USER_ERRORS.items() if isinstance(e, cls))
        text = error_message(e) if isinstance(e, DataError) else str(e)
        print(f"{kind}: {text}", file=sys.stderr)
        raise SystemExit(2) from None
