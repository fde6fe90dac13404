"""Cooperative cancellation of CPU-bound work that runs in a worker thread.

A thread cannot be interrupted from outside, so long loops (near-duplicate grouping, diversity
re-ranking, model fitting) call ``check()`` every so often; it raises :class:`Cancelled` once
the caller has given up (its RPC was cancelled) or the call's deadline has passed, and the
worker stops instead of burning a core for a client that is gone.
"""

from __future__ import annotations

import threading
import time


class Cancelled(Exception):
    """The caller gave up: the work was abandoned part-way and has no result."""


class CancelToken:
    def __init__(self, *, timeout: float | None = None) -> None:
        """``timeout``: seconds from now after which ``check`` raises (None: no deadline)."""
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set() or (
            self._deadline is not None and time.monotonic() >= self._deadline
        )

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled("the caller gave up (cancelled, or its deadline passed)")


NEVER_CANCELLED = CancelToken()
"""For callers that have no deadline (tests, batch jobs run to completion)."""
