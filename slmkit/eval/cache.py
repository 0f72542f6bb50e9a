"""A resumable cache of finished requests: SQLite, keyed by the model's fingerprint and the request itself,
written after every batch, so an interrupted run picks up where it stopped."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path


class RequestCache:
    def __init__(self, path: str | Path, fingerprint: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path))
        self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT)")
        self.fingerprint = fingerprint

    def key(self, kind: str, args) -> str:
        return hashlib.sha256(json.dumps([self.fingerprint, kind, args], ensure_ascii=False).encode()).hexdigest()

    def get(self, keys: list[str]) -> dict[str, object]:
        out: dict[str, object] = {}
        for s in range(0, len(keys), 500):
            chunk = keys[s : s + 500]
            q = f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(chunk))})"
            out.update({k: json.loads(v) for k, v in self.db.execute(q, chunk)})
        return out

    def put(self, items: dict[str, object]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)",
                            [(k, json.dumps(v)) for k, v in items.items()])
        self.db.commit()

    def close(self) -> None:
        self.db.close()
