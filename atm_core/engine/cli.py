"""What ``python -m atm_core.train`` and ``python -m atm_core.evaluate`` share: one clean line for
the errors a user can fix, exit code 2."""
from __future__ import annotations

import sys
from collections.abc import Callable

from ..data.errors import DataError, error_message
from .checkpoint import DiskFullError
from .config import ConfigError
from .rundir import RunDirError
from .stopping import Interrupted

USER_ERRORS = {RunDirError: "error", ConfigError: "configuration error", DataError: "data error",
               DiskFullError: "error"}


def run_reporting_errors(job: Callable[[], dict], debug: bool = False) -> dict:
    """``job()``; a configuration, data, run directory or full-disk error is printed as one line
    (the traceback too with ``debug``) and exits with code 2; a run stopped by a signal says where
    its state is and exits with 128 + the signal's number."""
    try:
        return job()
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except tuple(USER_ERRORS) as e:
        if debug:
            raise
        kind = next(label for cls, label in USER_ERRORS.items() if isinstance(e, cls))
        text = error_message(e) if isinstance(e, DataError) else str(e)
        print(f"{kind}: {text}", file=sys.stderr)
        raise SystemExit(2) from None
