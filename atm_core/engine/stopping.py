"""Ctrl-C and SIGTERM during training: noted by a signal handler and acted on at the next step
boundary, so that a checkpoint is never cut in half; a second signal stops at once."""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The training stopped on a signal after saving its state; ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopRequest:
    """The first SIGINT / SIGTERM received while :meth:`installed` is active."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return
        previous = {s: signal.getsignal(s) for s in SIGNALS}

        def note(signum: int, frame) -> None:
            if self.signum is not None:  # asked twice: stop now
                raise KeyboardInterrupt
            self.signum = signum

        for s in SIGNALS:
            signal.signal(s, note)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def requested(self, accelerator: Accelerator) -> bool:
        """Whether any process was asked to stop (all processes agree)."""
        if accelerator.num_processes == 1:
            return self.signum is not None
        flag = torch.tensor([self.signum or 0], device=accelerator.device)
        self.signum = int(accelerator.reduce(flag, "max").item()) or None
        return self.signum is not None

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal"
