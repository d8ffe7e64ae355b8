"""runtime/gcpause: automatic collection is off while any migration holds the pause."""

from __future__ import annotations

import gc

import pytest

from migbed.runtime.gcpause import DowntimeGcPause


@pytest.fixture(autouse=True)
def _gc_enabled_around() -> object:
    gc.enable()
    yield None
    gc.enable()


def test_overlapping_holders_resume_collection_after_the_last() -> None:
    pause = DowntimeGcPause()
    pause.hold()
    pause.hold()
    assert not gc.isenabled()
    pause.release()
    assert not gc.isenabled()  # one migration is still inside its downtime
    pause.release()
    assert gc.isenabled()


def test_a_second_release_does_not_unbalance_the_count() -> None:
    pause = DowntimeGcPause()
    pause.hold()
    pause.release()
    pause.release()
    assert pause.holders == 0 and gc.isenabled()
    pause.hold()
    assert not gc.isenabled()
    pause.release()


def test_a_process_with_gc_off_keeps_it_off() -> None:
    gc.disable()
    pause = DowntimeGcPause()
    pause.hold()
    pause.release()
    assert not gc.isenabled()
