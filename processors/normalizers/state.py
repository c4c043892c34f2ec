"""Memory normalizers keep across frames (``Frame.recall``/``remember``), per connection and session.

Without a store it lives in a dict. The Faust app passes a store: its changelog-backed
table for the provider, keyed by connection id like the raw topic (so co-partitioned with
it). Then :meth:`NormalizerState.commit` saves every connection touched since the last
commit (the app calls it once a batch's outputs are delivered, before the batch's offsets
are committed), and a connection not in memory (after a restart or a rebalance) is read
back from the store the first time one of its frames arrives: TD/Schwab level-one images
keep merging where they left off.
"""

from __future__ import annotations

from typing import Any, MutableMapping

import orjson


class NormalizerState:
    def __init__(self, store: MutableMapping[bytes, bytes] | None = None) -> None:
        self.store = store
        self._conns: dict[str, tuple[str, dict[str, Any]]] = {}  # conn -> (session, {key: value})
        self._dirty: set[str] = set()

    def _entry(self, conn: str) -> tuple[str, dict[str, Any]] | None:
        entry = self._conns.get(conn)
        if entry is None and self.store is not None:
            saved = self.store.get(conn.encode())
            if saved:
                doc = orjson.loads(saved)
                entry = self._conns[conn] = (doc["session"], doc["keys"])
        return entry

    def get(self, conn: str, session: str, key: str) -> Any:
        entry = self._entry(conn)
        if entry is None or entry[0] != session:
            return None
        return entry[1].get(key)

    def put(self, conn: str, session: str, key: str, value: Any) -> None:
        entry = self._entry(conn)
        if entry is None or entry[0] != session:
            entry = self._conns[conn] = (session, {})
        entry[1][key] = value
        self._dirty.add(conn)

    def drop_connection(self, conn: str) -> None:
        """Forget a connection (called on its session markers: the next session starts anew)."""
        if self._conns.pop(conn, None) is not None or self.store is not None:
            self._dirty.add(conn)

    def commit(self) -> None:
        """Save the connections changed since the last commit to the store (no-op without one)."""
        if self.store is not None:
            for conn in self._dirty:
                entry = self._conns.get(conn)
                if entry is None:
                    self.store.pop(conn.encode(), None)
                else:
                    self.store[conn.encode()] = orjson.dumps({"session": entry[0], "keys": entry[1]})
        self._dirty.clear()

    def forget(self) -> None:
        """Partitions moved (a rebalance): drop what is in memory; the store has what was committed."""
        if self.store is not None:
            self._conns.clear()
            self._dirty.clear()

    def __len__(self) -> int:
        return sum(len(keys) for _session, keys in self._conns.values())
