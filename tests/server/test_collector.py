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


def test_configure_freezes_start_up_objects_and_spaces_full_collections_out(
    restored_collector: None,
) -> None:
    young, middle, _ = gc.get_threshold()
    alive_at_start_up = [object(), {"kept": "for the server's life"}]
    gc.unfreeze()
    collector.configure(345)
    assert gc.get_freeze_count() > 0
    # Frozen objects are no longer among those the collector walks.
    assert not any(o is alive_at_start_up[1] for o in gc.get_objects())
    # Only the oldest generation's threshold changes: young collections stay short.
    assert gc.get_threshold() == (young, middle, 345)


def test_the_default_is_the_documented_one(restored_collector: None) -> None:
    collector.configure()
    assert gc.get_threshold()[2] == collector.DEFAULT_OLD_THRESHOLD == 100
    assert load_config().gc_old_threshold == collector.DEFAULT_OLD_THRESHOLD


@pytest.mark.parametrize("bad", [0, -1])
def test_a_threshold_below_one_is_refused(bad: int, restored_collector: None) -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="old_threshold"):
        collector.configure(bad)
    assert gc.get_threshold() == before  # nothing half-applied
    with pytest.raises(ValueError, match="gc_old_threshold"):
        load_config(gc_old_threshold=bad)


def test_rivet_serve_takes_the_setting_as_a_flag() -> None:
    from server.cli import build_parser

    args = build_parser().parse_args(["serve", "--gc-old-threshold", "50"])
    assert args.gc_old_threshold == 50
