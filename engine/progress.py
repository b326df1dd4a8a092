"""Progress reporting and cooperative cancellation for long engine work.

Engine functions take ``progress(stage, done, total)`` and a :class:`CancelToken`. They never know about
threads or Qt.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

ProgressCallback = Callable[[str, int, int], None]


class Cancelled(Exception):
    """Raised when the user cancelled.

    Deliberately NOT a RuntimeError: nnU-Net's sliding window catches RuntimeError and silently reruns the
    whole prediction on the CPU.
    """


class CancelToken:
    """Thread-safe flag checked by long-running engine code."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("Cancelled by the user.")


def no_progress(stage: str, done: int, total: int) -> None:  # noqa: D401 - a do-nothing callback
    """Progress callback that ignores everything."""


def check(cancel: Optional[CancelToken]) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()
