"""The join store's bookkeeping: time to live, re-joined keys, rebalances."""

from __future__ import annotations

from services.monitor.join_store import JoinStore


def test_an_entry_lives_ttl_from_its_first_write_even_if_updated() -> None:
    store = JoinStore(ttl_s=10)
    store.put(0, "a", {"f": 1}, at=0.0)
    store.put(0, "a", {"f": 1, "p": 0}, at=8.0)  # an update keeps the first time
    assert store.expire(0, now=9.9) == 0 and store.get(0, "a") == {"f": 1, "p": 0}
    assert store.expire(0, now=10.1) == 1 and store.get(0, "a") is None


def test_a_key_joined_and_back_again_keeps_its_own_deadline() -> None:
    store = JoinStore(ttl_s=10)
    store.put(0, "a", {"f": 1}, at=0.0)
    store.put(0, "a", None, at=1.0)  # joined: forgotten
    store.put(0, "a", {"l": 1}, at=5.0)  # a duplicate label waits anew
    assert store.expire(0, now=11.0) == 0 and store.get(0, "a") == {"l": 1}
    assert store.expire(0, now=15.5) == 1 and len(store) == 0


def test_partitions_are_separate_and_expire_separately() -> None:
    store = JoinStore(ttl_s=10)
    store.put(0, "a", {"f": 1}, at=0.0)
    store.put(1, "a", {"f": 2}, at=0.0)
    assert store.expire(0, now=20.0) == 1
    assert store.get(1, "a") == {"f": 2} and store.waiting(1) == 1 and store.waiting(0) == 0


def test_a_rebalance_forgets_partitions_no_longer_held_and_rebuilds_them_if_they_return() -> None:
    store = JoinStore(ttl_s=10)
    for partition in (0, 1, 2):
        store.mark_rebuilt(partition)
        store.put(partition, "a", {"f": partition}, at=0.0)
    store.keep_only({0, 2})
    assert store.get(1, "a") is None and store.needs_rebuild(1)
    assert not store.needs_rebuild(0) and store.get(2, "a") == {"f": 2}
    assert len(store) == 2


def test_putting_the_same_entry_again_adds_no_second_deadline() -> None:
    store = JoinStore(ttl_s=10)
    store.put(0, "a", {"f": 1}, at=0.0)
    store.put(0, "a", {"f": 1}, at=3.0)
    assert len(store._expiry[0]) == 1
