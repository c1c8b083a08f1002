"""``server.collector``: the garbage collector set for a long-lived server, and its setting."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from server import collector
from server.config import load_config


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """The test changes process-wide state: put the thresholds back and unfreeze."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_configure_freezes_start_up_objects_and_lengthens_the_young_generation(
    restored_collector: None,
) -> None:
    _, middle, old = gc.get_threshold()
    alive_at_start_up = [object(), {"kept": "for the server's life"}]
    gc.unfreeze()
    collector.configure(12_345)
    assert gc.get_freeze_count() > 0
    # Frozen objects are no longer among those the collector walks.
    assert not any(o is alive_at_start_up[1] for o in gc.get_objects())
    # Only the young generation changes: full collections keep CPython's cadence.
    assert gc.get_threshold() == (12_345, middle, old)


def test_the_default_is_the_documented_one(restored_collector: None) -> None:
    collector.configure()
    assert gc.get_threshold()[0] == collector.DEFAULT_YOUNG_THRESHOLD == 20_000
    assert load_config().gc_young_threshold == collector.DEFAULT_YOUNG_THRESHOLD


@pytest.mark.parametrize("bad", [0, -1])
def test_a_threshold_below_one_is_refused(bad: int, restored_collector: None) -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="young_threshold"):
        collector.configure(bad)
    assert gc.get_threshold() == before  # nothing half-applied
    with pytest.raises(ValueError, match="gc_young_threshold"):
        load_config(gc_young_threshold=bad)


def test_rivet_serve_takes_the_setting_as_a_flag() -> None:
    from server.cli import build_parser

    args = build_parser().parse_args(["serve", "--gc-young-threshold", "5000"])
    assert args.gc_young_threshold == 5000
