"""The held time of the fold watermark: the age of the oldest fold not caught up with."""

from __future__ import annotations

from services.learning.domain.horizon_hold import RESOLUTION_SECONDS, HorizonHold


def test_nothing_in_progress_is_caught_up() -> None:
    hold = HorizonHold()
    assert hold.held_seconds(10.0) == 0.0
    hold.observe(at=1.0, watermark=100, seen_through=100)
    assert hold.held_seconds(50.0) == 0.0


def test_short_transactions_hold_it_about_one_fold() -> None:
    hold = HorizonHold()
    for fold in range(10):
        # Each fold sees a few transactions in progress that have finished by the next one.
        hold.observe(at=fold * 2.0, watermark=100 + 10 * fold, seen_through=105 + 10 * fold)
        assert hold.held_seconds(fold * 2.0 + 0.5) == 0.5


def test_a_transaction_left_open_holds_it_until_it_ends() -> None:
    hold = HorizonHold()
    hold.observe(at=0.0, watermark=100, seen_through=100)
    # Transaction 101 stays open: the watermark stops at 101 while others commit past it.
    for second in range(1, 600):
        hold.observe(at=float(second), watermark=101, seen_through=110 + second)
    assert hold.held_seconds(600.0) == 599.0
    # It commits; the next fold's watermark is past everything the held folds saw but 708,
    # which the last one (at 599 s, xmax 709) saw and is still running now.
    hold.observe(at=601.0, watermark=708, seen_through=712)
    assert hold.held_seconds(601.5) == 2.5
    hold.observe(at=602.0, watermark=712, seen_through=712)
    assert hold.held_seconds(700.0) == 0.0


def test_folds_close_together_share_an_entry_and_never_read_low() -> None:
    hold = HorizonHold()
    for step in range(100):
        hold.observe(at=step * 0.01, watermark=50, seen_through=60 + step)
    assert len(hold._waiting) == 1
    # Past every xmax but the last: the shared entry keeps the earliest time (reads high).
    hold.observe(at=1.0 + RESOLUTION_SECONDS, watermark=158, seen_through=158)
    assert hold.held_seconds(3.0) == 3.0
    hold.observe(at=3.0, watermark=159, seen_through=159)
    assert hold.held_seconds(3.0) == 0.0
