"""Where the monitor keeps the halves of joins that wait for their partner (a prediction for
its late label, a label that came first), per input partition, each for at most `ttl_s`.

Why not a faust table: a table writes one changelog message for every change, and the join
changes with nearly every record; that write was most of the monitor's cost per record
(benchmarks/RESULTS.md). The join's state is a function of the input events of the last
`ttl_s` seconds, and those events are already durable in their own topics, so the inputs are
the changelog (as Kafka Streams reuses a source topic as a table's changelog): a partition
this worker has not rebuilt yet is replayed from its input topics, from `ttl_s` ago up to the
offsets the monitor's group committed, before its first event is processed; everything after
those offsets reaches the agent as usual. The store itself is plain memory and does no I/O.

>>> store = JoinStore(ttl_s=60)
>>> store.needs_rebuild(0)
True
>>> store.mark_rebuilt(0)
>>> store.put(0, "r-1", {"l": 1}, at=100.0)
>>> store.get(0, "r-1"), len(store)
({'l': 1}, 1)
>>> store.expire(0, now=161.0), store.get(0, "r-1")
(1, None)
>>> store.put(1, "r-2", {"l": 0}, at=100.0); store.expire_all(now=200.0)
1
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

Entry = dict[str, Any]


class JoinStore:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[int, dict[str, tuple[float, Entry]]] = defaultdict(dict)
        self._expiry: dict[int, deque[tuple[float, str]]] = defaultdict(deque)
        self._rebuilt: set[int] = set()
        self.replay_unfinished: set[int] = set()
        """Partitions whose replay ran out of time (readiness says so until one finishes)."""

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())

    def waiting(self, partition: int) -> int:
        return len(self._entries[partition])

    def get(self, partition: int, key: str) -> Entry | None:
        kept = self._entries[partition].get(key)
        return kept[1] if kept is not None else None

    def put(self, partition: int, key: str, entry: Entry | None, at: float) -> None:
        """Keep `entry` for `key` (None: forget the key). `at` (seconds) starts its time to
        live when the key is new; updates keep the first time, so a chatty key still expires."""
        entries = self._entries[partition]
        if entry is None:
            entries.pop(key, None)
            return
        kept = entries.get(key)
        if kept is None:
            entries[key] = (at, entry)
            self._expiry[partition].append((at, key))
        elif kept[1] != entry:
            entries[key] = (kept[0], entry)

    def expire(self, partition: int, now: float) -> int:
        """Forget the entries of `partition` older than the time to live; how many went."""
        entries, queue = self._entries[partition], self._expiry[partition]
        cutoff, gone = now - self.ttl_s, 0
        while queue and queue[0][0] < cutoff:
            at, key = queue.popleft()
            kept = entries.get(key)
            # the key may have been joined and come back since: only its own deadline counts
            if kept is not None and kept[0] == at:
                del entries[key]
                gone += 1
        return gone

    def expire_all(self, now: float) -> int:
        """`expire` on every partition: an idle partition's entries go too (run on a timer;
        `expire` alone ran only on the partition of the event that arrived)."""
        return sum(self.expire(partition, now) for partition in list(self._entries))

    def needs_rebuild(self, partition: int) -> bool:
        return partition not in self._rebuilt

    def mark_rebuilt(self, partition: int) -> None:
        self._rebuilt.add(partition)
        self.replay_unfinished.discard(partition)

    def keep_only(self, partitions: set[int]) -> None:
        """After a rebalance: forget the partitions this worker no longer holds (another
        worker may change them meanwhile, so they are rebuilt if they come back)."""
        for partition in set(self._entries) | self._rebuilt:
            if partition not in partitions:
                self._entries.pop(partition, None)
                self._expiry.pop(partition, None)
                self._rebuilt.discard(partition)
                self.replay_unfinished.discard(partition)
