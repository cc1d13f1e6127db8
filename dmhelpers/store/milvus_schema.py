"""The chunks collections of a Milvus store (``<collection>__g<n>``, one generation per overwrite): their schema and
HNSW index, the limits their fields put on what a store can hold (checked before anything is embedded or written),
and the best-effort steps around a write (flush, undo, the alias)."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from dmhelpers.utils.errors import InputError

TEXT_BYTES, ID_BYTES, METADATA_BYTES = 65_535, 64, 65_536  # Milvus's VARCHAR and JSON limits in this schema
TOP_K_LIMIT = 16_384  # Milvus's largest k
VERSION_KEY = "dmhelpers.version"  # the property of a chunks collection that stamp_version() sets


def check_limits(texts: list[str], metadatas: list[dict[str, Any]], ids: list[str]) -> None:
    """Refuse, with an :class:`InputError` naming the row and the fix, a row over a field's limit."""
    for n, (t, i, m) in enumerate(zip(texts, ids, metadatas)):
        if len(t.encode("utf-8")) > TEXT_BYTES:
            raise InputError(f"Text {n} is {len(t.encode('utf-8')):,} bytes long: a Milvus store holds at most "
                             f"{TEXT_BYTES:,} bytes per chunk. Split it (a smaller CHUNK_SIZE), then add again.")
        if len(i.encode("utf-8")) > ID_BYTES:
            raise InputError(f"Id {n} ({i[:20]!r}...) is longer than {ID_BYTES} bytes, Milvus's limit for this "
                             "store's ids. Use shorter ids, or ids=None to generate them.")
        if len(json.dumps(m, ensure_ascii=False).encode("utf-8")) > METADATA_BYTES:
            raise InputError(f"Metadata {n} is over {METADATA_BYTES:,} bytes as JSON, Milvus's limit. Keep large "
                             "values elsewhere and store a reference.")


def create_chunks(client: MilvusClient, call: Callable[..., Any], physical: str, dim: int,
                  params: dict[str, int]) -> None:
    """Create the chunks collection ``physical``: id, seq (row position), text, metadata, vector (HNSW, cosine)."""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_BYTES)
    schema.add_field("seq", DataType.INT64)
    schema.add_field("text", DataType.VARCHAR, max_length=TEXT_BYTES)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="HNSW", metric_type="COSINE",
                    params={"M": params["M"], "efConstruction": params["ef_construction"]})
    call("create the collection", client.create_collection, physical, schema=schema, index_params=index,
         consistency_level="Strong")


def generations(client: MilvusClient, call: Callable[..., Any], collection: str) -> list[tuple[int, str]]:
    """The chunks collections of the store ``collection`` there are, ``(n, "<collection>__g<n>")``, oldest first."""
    found = (re.fullmatch(rf"{re.escape(collection)}__g(\d+)", name)
             for name in call("list collections", client.list_collections))
    return sorted((int(m.group(1)), m.group(0)) for m in found if m)


def flush_quietly(client: MilvusClient, physical: str) -> None:
    """Seal the new rows, so they get the HNSW index: rows left growing are searched by brute force (in Milvus
    Lite about 50x slower, in the writing process). Best effort: the rows are committed either way, and a server
    may rate-limit flushes."""
    try:
        client.flush(physical)
    except MilvusException:
        pass


def undo_quietly(client: MilvusClient, physical: str, fresh: bool, start: int) -> None:
    """Best effort after a failed write; what it cannot remove is invisible and the next write removes it."""
    try:
        if fresh:
            client.drop_collection(physical)
        else:
            client.delete(physical, filter=f"seq >= {start}")
    except Exception:  # noqa: BLE001 - the server may be gone; the record still names the old rows
        pass


def point_alias(client: MilvusClient, collection: str, physical: str, old: str | None) -> None:
    """Let other clients find the new generation ``physical`` under the store's name, then drop the ``old`` one.
    (An alias of that name is the store's own: a store is never made where a collection of its name exists.)"""
    try:
        try:  # asked first, not tried: a failed call is logged to stderr, a red box in a notebook
            aliases = client.list_aliases(old or "").get("aliases", [])
        except MilvusException:
            aliases = []
        if collection in aliases:
            client.alter_alias(physical, collection)
        else:
            client.create_alias(physical, collection)
        if old and old != physical:
            client.drop_collection(old)
    except MilvusException:  # the record already names the new generation; the next overwrite retries
        pass


def stamp_version(client: MilvusClient, physical: str, version: int) -> None:
    """Keep the version of the record just committed on the chunks collection too (a collection property), outside
    the side collection: a side collection that lost its last writes (a Milvus Lite manifest that fell back to its
    older copy) then shows at the next open as a record older than its chunks. Best effort: a lower stamp is no
    harm, it only checks less."""
    try:
        client.alter_collection_properties(physical, {VERSION_KEY: str(version)})
    except MilvusException:
        pass


def stamped_version(client: MilvusClient, call: Callable[..., Any], physical: str) -> int:
    """The version :func:`stamp_version` left on ``physical`` (0 if none)."""
    properties = call("describe the collection", client.describe_collection, physical).get("properties") or {}
    try:
        return int(properties.get(VERSION_KEY, 0))
    except (TypeError, ValueError):
        return 0
