"""The one place in the GUI that owns threads.

Long work (loading, segmentation, meshing, measuring, evaluating, exporting) runs as a :class:`Task` on a
plain Python daemon thread. The engine function receives ``progress(stage, done, total)`` and a
``CancelToken``; results come back to the GUI thread through Qt signals (queued automatically because
the Task object lives in the GUI thread). Nothing here ever blocks the GUI thread waiting for a worker:
no ``QThread.wait()`` in a slot (that deadlocks; docs/architecture.md, "Who owns threads"). ``shutdown`` at close cancels
everything and gives each thread a short grace period.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, Signal, Slot

from engine.errors import LiverPlanError
from engine.progress import CancelToken, Cancelled

log = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    """A sentence a clinician can read for any failure."""
    if isinstance(exc, LiverPlanError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return ("There was not enough memory to finish. Close other programs, choose the CPU or the "
                "'fast' mode, and try again. Nothing was changed.")
    text = str(exc)
    if "out of memory" in text.lower():
        return ("The graphics card ran out of memory. Choose the CPU or the 'fast' mode and try again. "
                "Nothing was changed.")
    return f"Something went wrong ({type(exc).__name__}: {text}). Nothing was changed."


class Task(QObject):
    """One piece of background work. Exactly one of succeeded/failed/cancelled fires, then ``done``."""

    progress = Signal(str, int, int)
    succeeded = Signal(object)
    failed = Signal(str, object)        # message for the user, the exception
    cancelled = Signal()
    done = Signal()

    # Emitted on the worker thread; relayed by this object's slots so that every public signal fires on
    # the GUI thread, whatever kind of callable (lambda, function) the caller connected to it.
    worker_progress = Signal(str, int, int)
    worker_ok = Signal(object)
    worker_failed = Signal(str, object)
    worker_cancelled = Signal()
    worker_done = Signal()

    def __init__(self, name: str, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.worker_progress.connect(self._on_progress)
        self.worker_ok.connect(self._on_ok)
        self.worker_failed.connect(self._on_fail)
        self.worker_cancelled.connect(self._on_cancel)
        self.worker_done.connect(self._on_done)
        self.finished = False
        self.name = name
        self.token = CancelToken()
        self.thread: Optional[threading.Thread] = None
        self.started_at = time.monotonic()
        self._last_emit = 0.0

    def cancel(self) -> None:
        self.token.cancel()

    @Slot(str, int, int)
    def _on_progress(self, stage: str, done: int, total: int) -> None:
        if not self.finished:
            self.progress.emit(stage, done, total)

    @Slot(object)
    def _on_ok(self, result: object) -> None:
        if self.token.cancelled:  # a result that arrives after Cancel is dropped: the case stays unchanged
            self.cancelled.emit()
        else:
            self.succeeded.emit(result)

    @Slot(str, object)
    def _on_fail(self, message: str, exc: object) -> None:
        self.failed.emit(message, exc)

    @Slot()
    def _on_cancel(self) -> None:
        self.cancelled.emit()

    @Slot()
    def _on_done(self) -> None:
        self.finished = True
        self.done.emit()

    @property
    def is_cancelled(self) -> bool:
        return self.token.cancelled

    def is_running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    # Called on the worker thread.
    def report_progress(self, stage: str, done: int, total: int) -> None:
        self.token.raise_if_cancelled()
        now = time.monotonic()
        # At most ~25 updates a second reach the GUI; the first and the last of a stage always do.
        if done in (0, total) or now - self._last_emit > 0.04:
            self._last_emit = now
            self.worker_progress.emit(str(stage), int(done), int(total))


class TaskRunner(QObject):
    """Starts tasks and keeps them alive until they end."""

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._tasks: set[Task] = set()

    def start(self, name: str, fn: Callable[..., Any], *args: Any, progress: bool = True,
              **kwargs: Any) -> Task:
        """Run ``fn(*args, **kwargs)`` (plus ``progress=`` and ``cancel=`` when ``progress``) off the GUI thread."""
        task = Task(name, self)
        self._tasks.add(task)
        task.done.connect(self._forget_sender)

        def body() -> None:
            try:
                if progress:
                    result = fn(*args, progress=task.report_progress, cancel=task.token, **kwargs)
                else:
                    result = fn(*args, **kwargs)
                task.worker_ok.emit(result)
            except Cancelled:
                task.worker_cancelled.emit()
            except BaseException as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
                if task.token.cancelled:
                    task.worker_cancelled.emit()
                else:
                    if not isinstance(exc, LiverPlanError):
                        log.error("task %s failed:\n%s", name, traceback.format_exc())
                    task.worker_failed.emit(describe_error(exc), exc)
            finally:
                task.worker_done.emit()

        task.thread = threading.Thread(target=body, name=f"liverplan-{name}", daemon=True)
        task.thread.start()
        return task

    @Slot()
    def _forget_sender(self) -> None:
        for task in [t for t in self._tasks if t.finished]:
            self._tasks.discard(task)
            task.deleteLater()

    def running(self, name: Optional[str] = None) -> list[Task]:
        return [t for t in self._tasks if name is None or t.name == name]

    def cancel_all(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    def shutdown(self, grace_s: float = 2.0) -> None:
        """Cancel every task and give the threads a moment to stop (used only when the window closes)."""
        self.cancel_all()
        deadline = time.monotonic() + grace_s
        for t in list(self._tasks):
            if t.thread is not None:
                t.thread.join(max(deadline - time.monotonic(), 0.0))
