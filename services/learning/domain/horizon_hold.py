"""How long the fold watermark has been held back behind a transaction still running.

The fold folds every visible row, so a long-running transaction elsewhere in the cluster does not
grow learning's backlog: what it stops is the watermark (the snapshot's ``xmin``, see
``services.learning.storage.fold_repository``), which cannot pass the oldest transaction still in
progress. Every fold from then on re-reads the rows above it — more work per fold, and vacuum
cannot clean the log either — so an operator wants to know, and the alert
``ReviewlearnFoldHorizonHeld`` says so.

A fold at time ``t`` saw everything committed by then below its snapshot's ``xmax``. Once a later
watermark reaches that ``xmax``, the watermark has caught up with everything committed at ``t``.
The held time is therefore the age of the oldest fold whose ``xmax`` the watermark has not reached
yet; zero when the last fold saw nothing in progress. Under ordinary load (short transactions) it
stays about one fold interval; behind a transaction open for an hour it is an hour.
"""

from __future__ import annotations

from collections import deque

RESOLUTION_SECONDS = 1.0
"""Folds closer together than this share one entry (the later ``xmax``, the earlier time), so a
transaction held for a day keeps at most one entry per second; the held time can read up to this
much high, never low."""


class HorizonHold:
    def __init__(self) -> None:
        self._waiting: deque[tuple[float, int]] = deque()
        """(when a fold saw it, its snapshot's xmax) for folds not caught up with yet, in order."""

    def observe(self, *, at: float, watermark: int, seen_through: int) -> None:
        """A fold committed at monotonic time ``at``: the watermark is now ``watermark`` and its
        snapshot saw every transaction below ``seen_through`` (its ``xmax``)."""
        waiting = self._waiting
        while waiting and waiting[0][1] <= watermark:
            waiting.popleft()
        if seen_through <= watermark:
            return  # nothing was in progress: caught up
        if waiting and at - waiting[-1][0] < RESOLUTION_SECONDS:
            waiting[-1] = (waiting[-1][0], max(waiting[-1][1], seen_through))
        else:
            waiting.append((at, seen_through))

    def held_seconds(self, now: float) -> float:
        """Seconds since the watermark last caught up with everything committed; 0 when it has."""
        if not self._waiting:
            return 0.0
        return max(now - self._waiting[0][0], 0.0)
