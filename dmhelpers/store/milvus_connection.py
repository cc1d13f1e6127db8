"""The connection of a Milvus store: every client call goes through :meth:`Connection.call`, which names the server
and the step in a :class:`~dmhelpers.utils.errors.StoreError`, and Milvus Lite's rule of one process per ``.db`` file
becomes a :class:`~dmhelpers.utils.errors.StoreLockedError` that says what to do."""
from __future__ import annotations

import collections
import os
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from dmhelpers.utils.errors import StoreError, StoreLockedError

READS = {"query", "search", "has_collection", "load_collection"}  # calls safe to repeat
_LITE_OPEN: collections.Counter[str] = collections.Counter()  # Milvus Lite files this process has open, by store


class Connection:
    """A ``MilvusClient`` for ``uri`` (a Milvus Lite file's absolute path, or a server's URI; ``path`` is what the
    user gave, for messages)."""

    def __init__(self, path: str, uri: str, lite: bool, token: str, timeout: float) -> None:
        self.path, self.uri, self.lite = path, uri, lite
        self.client: MilvusClient | None = None
        # pymilvus pings every 10 s even on an idle channel; servers with gRPC's default policy (milvus-lite server)
        # answer with GOAWAY "too many pings", failing the call then in flight. Ping only while calls are running.
        options = {"grpc_options": {"grpc.keepalive_permit_without_calls": False}}
        try:
            try:
                self.client = MilvusClient(uri, token=token, timeout=timeout, **options)
            except grpc.RpcError:  # a pooled channel the server closed (GOAWAY): gRPC reconnects on the next call
                time.sleep(0.5)
                self.client = MilvusClient(uri, token=token, timeout=timeout, **options)
        except (MilvusException, grpc.RpcError) as exc:
            if lite and "open local milvus failed" in str(exc).lower():
                raise StoreLockedError(
                    f"The Milvus Lite file {path} is open in another process: Milvus Lite allows one process per .db "
                    "file. Close the other one (db.close(), or restart its notebook kernel) and retry, or serve the "
                    "file with `milvus-lite server --data-dir ... --host 127.0.0.1` and open its http:// URI from "
                    "every process.") from exc
            raise StoreError(f"Cannot reach Milvus at {path} ({getattr(exc, 'message', exc)}). Check that the "
                             "server is running and the URI is right (and MILVUS_TOKEN, if it needs one); nothing "
                             "was written.") from exc
        if lite:
            _LITE_OPEN[uri] += 1

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One client call; a failure becomes a :class:`StoreError` naming the server and the step. A read is tried
        twice when the connection dropped (a channel the server closed reconnects on the next call)."""
        if self.client is None:
            raise StoreError(f"The store at {self.path} was closed. Open it again with VectorStore(...).")
        try:
            try:
                return fn(*args, **kwargs)
            except (MilvusException, grpc.RpcError) as exc:
                if getattr(fn, "__name__", "") not in READS or not _unavailable(exc):
                    raise
                time.sleep(0.5)
                return fn(*args, **kwargs)
        except (MilvusException, grpc.RpcError, OSError, ConnectionError) as exc:
            raise StoreError(f"Milvus at {self.path} could not {what} ({getattr(exc, 'message', None) or exc}). "
                             "Check that the server is running and reachable, then retry.") from exc

    def close(self) -> None:
        if self.client is None:
            return
        self.client.close()
        self.client = None
        if self.lite:
            _LITE_OPEN[self.uri] -= 1
            if not _LITE_OPEN[self.uri]:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)


def side_folder(path: str, collection: str) -> Path:
    """The default local folder for a Milvus store's side files (``db.folder``): beside a Milvus Lite file (which
    Milvus Lite owns), else under the user's cache folder, keyed by server and collection."""
    if not path.startswith(("http://", "https://")):
        return Path(path).expanduser().parent / (Path(path).name + ".files") / collection
    url = urllib.parse.urlsplit(path)
    port = url.port or (443 if url.scheme == "https" else 19530)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dmhelpers" / "milvus" / f"{url.hostname}-{port}" / collection


def _unavailable(exc: Exception) -> bool:
    """Whether an error says the connection, not the request, failed."""
    text = str(exc).lower()
    return "unavailable" in text or "fail connecting" in text or "too many pings" in text
