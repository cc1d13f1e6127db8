"""The side collection of a Milvus store, ``<collection>__dm``: the store's record, its writer lock and its Deep
Memory models, kept in the same Milvus as the chunks so that any process on any machine that can reach the server
finds them (a local folder would be found only on the machine that trained).

Every value is stored under a key as one head row plus parts: the head (``key``) says which generation of parts
is current, the parts (``key@gen/i``) hold the bytes in base64 slices under Milvus's 65,535-byte VARCHAR limit.
A write inserts the new parts first and then upserts the head, one row, which is atomic; so a reader sees the old
value or the new one, never a torn one, and the old generation's parts are deleted afterwards.

Keys: ``store`` (the store's record: physical collection, embedder, count, fingerprint, version), ``lock``
(a writer's lease) and ``models/...`` (see :mod:`dmhelpers.deep_memory.repository`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from pymilvus import DataType, MilvusClient

from dmhelpers.utils.errors import StoreError, StoreLockedError

SUFFIX = "__dm"
PART_BYTES = 45_000  # 60,000 base64 characters: under the VARCHAR limit of 65,535
KEY = re.compile(r"[A-Za-z0-9_.:/@-]{1,200}")
MAX_ROWS = 16_384  # Milvus's largest query result
LEASE_S = 60.0  # a server writer's lock expires this long after its last renewal (a crashed writer's too)
_WRITING: set[str] = set()  # the leases this process holds for writes in progress


def quote(key: str) -> str:
    """A key as a Milvus string literal (keys are checked against :data:`KEY`, so no escaping is needed)."""
    if not KEY.fullmatch(key):
        raise FileNotFoundError(key)  # a key this module never writes
    return f'"{key}"'


ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def literal(value: str) -> str:
    """Any string as a Milvus filter-expression literal (an id a user chose, say). A backslash, a double quote, a
    line feed, a carriage return and a tab are escaped, the escapes that both Milvus Lite's parser and Milvus's
    (Go's ``strconv.Unquote``) read back; every other character, other controls and line separators included,
    stands as itself, which both take (``\\u`` and ``\\x`` escapes are refused by Milvus Lite)."""
    return '"' + "".join(ESCAPES.get(ch, ch) for ch in value) + '"'


class SideCollection:
    """Keyed byte values in ``<collection>__dm``, created on the first write. ``call`` runs one client call and
    turns a failure into a :class:`~dmhelpers.utils.errors.StoreError` naming the server."""

    def __init__(self, client: MilvusClient, name: str, call: Callable[..., Any]) -> None:
        self.client, self.name, self.call = client, name, call
        self._exists: bool | None = None

    def exists(self) -> bool:
        if not self._exists:
            self._exists = self.call("list collections", self.client.has_collection, self.name)
            if self._exists:  # a reopened collection is released until loaded
                self.call("load the side collection", self.client.load_collection, self.name)
        return bool(self._exists)

    def create(self) -> None:
        if self.exists():
            return
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("data", DataType.VARCHAR, max_length=65_535)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field; this one is unused
        index = self.client.prepare_index_params()
        index.add_index("v", index_type="FLAT", metric_type="L2")
        self.call("create the side collection", self.client.create_collection, self.name, schema=schema,
                  index_params=index, consistency_level="Strong")
        self._exists = True

    def _rows(self, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        return self.call("read the side collection", self.client.query, self.name, filter=expr,
                         output_fields=fields, limit=MAX_ROWS, consistency_level="Strong")

    def head(self, key: str) -> dict[str, Any] | None:
        if not self.exists():
            return None
        rows = self._rows(f"key == {quote(key)}", ["data"])
        return json.loads(rows[0]["data"]) if rows else None

    def read(self, key: str) -> bytes:
        head = self.head(key)
        if head is None:
            raise FileNotFoundError(key)
        try:
            names = [f"{key}@{head['gen']}/{i}" for i in range(int(head["parts"]))]
            digest = str(head["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the head of {key!r} in {self.name} is damaged ({exc!r})") from exc
        parts = {}
        for start in range(0, len(names), 500):
            batch = ", ".join(quote(n) for n in names[start:start + 500])
            parts.update({r["key"]: r["data"] for r in self._rows(f"key in [{batch}]", ["key", "data"])})
        data = b"".join(base64.b64decode(parts.get(n, "")) for n in names)
        if len(parts) != len(names) or hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"the value of {key!r} in {self.name} is incomplete or damaged")
        return data

    def write(self, key: str, data: bytes) -> None:
        self.create()
        gen = uuid.uuid4().hex[:12]
        parts = [data[i:i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]
        rows = [{"key": f"{key}@{gen}/{i}", "data": base64.b64encode(p).decode("ascii"), "v": [0.0, 0.0]}
                for i, p in enumerate(parts)]
        for start in range(0, len(rows), 200):
            self.call("write to the side collection", self.client.insert, self.name, rows[start:start + 200])
        head = {"gen": gen, "parts": len(parts), "sha256": hashlib.sha256(data).hexdigest()}
        self.call("write to the side collection", self.client.upsert, self.name,
                  [{"key": quote(key)[1:-1], "data": json.dumps(head), "v": [0.0, 0.0]}])
        # Older generations' parts: nobody points to them any more.
        self.call("clean the side collection", self.client.delete, self.name,
                  filter=f'key like "{key}@%" and not (key like "{key}@{gen}/%")')

    def keys(self, prefix: str, suffix: str) -> list[str]:
        if not self.exists():
            return []
        rows = self._rows(f'key like "{prefix}%"', ["key"])
        return sorted(r["key"] for r in rows if "@" not in r["key"] and r["key"].endswith(suffix))

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.read(key))
        except FileNotFoundError:
            return None

    def write_json(self, key: str, value: dict[str, Any]) -> None:
        self.write(key, json.dumps(value, ensure_ascii=False).encode("utf-8"))

    # ------------------------------------------------------------------ the writer lock of a server store
    def lock(self, where: str) -> str:
        """Take the writer lease, or raise :class:`StoreLockedError`; returns the owner token for :meth:`unlock`.

        Milvus has no compare-and-swap, so: refuse a live lease, write ours, wait, and read it back. Two writers
        that both saw it free both write; the later write wins and only its writer reads back its own token.
        """
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        held = self._lease()
        if held.get("owner") and held.get("expires", 0) > time.time() and not _dead(str(held["owner"])):
            self._locked(where, held)
        self.renew(owner)
        time.sleep(0.3)
        held = self._lease()
        if held.get("owner") != owner:
            self._locked(where, held)
        _WRITING.add(owner)
        return owner

    def _lease(self) -> dict[str, Any]:
        """The writer lease as stored; an unreadable one counts as free (the next lease replaces it)."""
        try:
            held = self.read_json("lock")
        except ValueError:
            return {}
        return held if isinstance(held, dict) and isinstance(held.get("expires", 0), (int, float)) else {}

    def renew(self, owner: str) -> None:
        self.write_json("lock", {"owner": owner, "expires": time.time() + LEASE_S})

    def unlock(self, owner: str | None) -> None:
        if owner:
            _WRITING.discard(owner)
            try:
                self.write_json("lock", {"owner": None, "expires": 0})
            except StoreError:
                pass  # the server is gone: the lease expires by itself

    @staticmethod
    def _locked(where: str, held: dict[str, Any]) -> None:
        left = max(0, round(held.get("expires", 0) - time.time()))
        raise StoreLockedError(f"The store {where} is locked: another process ({held.get('owner')}) is writing to "
                               f"it. Wait for it to finish (a writer that died frees it within {left} s), or use "
                               "another collection.")


def _dead(owner: str) -> bool:
    """Whether a lease's writer is known to be gone: a write of this process that ended without unlocking (the
    server went away), or a process of this machine that no longer runs. Other machines' leases just expire."""
    host, pid, _ = (owner.split(":") + ["", "", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return owner not in _WRITING
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class MilvusModels:
    """A store's Deep Memory models in its side collection, under ``models/``: the
    :class:`~dmhelpers.deep_memory.repository.ModelRepository` of a Milvus store."""

    def __init__(self, side: SideCollection, where: str) -> None:
        self.side, self.where = side, where

    def read(self, key: str) -> bytes:
        return self.side.read(f"models/{key}")

    def write(self, key: str, data: bytes) -> None:
        self.side.write(f"models/{key}", data)

    def exists(self, key: str) -> bool:
        return self.side.head(f"models/{key}") is not None

    def keys(self, suffix: str) -> list[str]:
        return [k[len("models/"):] for k in self.side.keys("models/", suffix)]
