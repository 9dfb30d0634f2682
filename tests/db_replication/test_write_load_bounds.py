"""The write load the switchover tests run is bounded the way the guide asks: loopback only, a capped number of
threads and a duration that is refused when too long rather than quietly cut (a cut load stopped in the middle of
the engine walk's switchover update and read as writes that never came back)."""

import pytest

from testsupport.replication_topology import MAX_DURATION, MAX_THREADS, WriteLoad

DSN = "host=127.0.1.1 port=6432 dbname=bazbii user=bazbii"


@pytest.mark.parametrize("seconds", [0, -1, MAX_DURATION + 1])
def test_a_duration_outside_the_bound_is_refused(seconds):
    with pytest.raises(ValueError, match="max_seconds"):
        WriteLoad(DSN, threads=1, max_seconds=seconds)


def test_the_longest_duration_is_kept_as_asked():
    assert WriteLoad(DSN, threads=MAX_THREADS, max_seconds=MAX_DURATION).max_seconds == MAX_DURATION


def test_only_loopback_is_loaded():
    with pytest.raises(ValueError, match="loopback"):
        WriteLoad("host=10.0.0.5 dbname=bazbii", threads=1, max_seconds=1)
