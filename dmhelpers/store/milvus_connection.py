"""The connection of a Milvus store: every client call goes through :meth:`Connection.call`, which names the server
and the step in a :class:`~dmhelpers.utils.errors.StoreError`, and Milvus Lite's rule of one process per ``.db`` file
becomes a :class:`~dmhelpers.utils.errors.StoreLockedError` that says what to do. Errors from a Milvus Lite file's
own damaged data say so (not "check the server"), and no message shows a password or token."""
from __future__ import annotations

import collections
import json
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from dmhelpers.store.milvus_side import SUFFIX
from dmhelpers.utils.errors import StoreError, StoreLockedError, redact

READS = {"query", "search", "has_collection", "load_collection"}  # calls safe to repeat
REBUILD_HINT = "Rebuild it with notebook 01 (OVERWRITE = True) or VectorStore(uri, overwrite=True)."
DAMAGE = re.compile(r"parquet|magic bytes|corrupt|checksum|manifest", re.IGNORECASE)  # a server's data is damaged
# ... and a Milvus Lite file's, by what its readers say of a damaged data file, schema file or index file. Only
# these phrases: a request's own error on a healthy file (a filter that does not parse, a metadata value that is not
# JSON, a message quoting the file's path) must not be called damage, with advice to rebuild or move the file aside.
LITE_DAMAGE = re.compile(DAMAGE.pattern + r"|schema file .* is not valid JSON|faiss::read_\w+|read error in \S+\.idx",
                         re.IGNORECASE)
OPENING = {"has_collection", "list_collections", "load_collection", "describe_collection"}  # calls that read files
DISK = re.compile(r"errno|no space|permission denied|read-only file system|quota", re.IGNORECASE)  # not damage
_LITE_OPEN: collections.Counter[str] = collections.Counter()  # Milvus Lite files this process has open, by store


class Connection:
    """A ``MilvusClient`` for ``uri`` (a Milvus Lite file's absolute path, or a server's URI); ``path`` is what the
    user gave, with any password masked, for messages; ``closed`` is the message of a call after :meth:`close`."""

    def __init__(self, path: str, uri: str, lite: bool, token: str, timeout: float, closed: str) -> None:
        self.path, self.uri, self.lite, self.closed = path, uri, lite, closed
        self.secrets = [token, *_userinfo(uri)]
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
            if lite:
                raise self.error("open the file", exc, opening=True) from exc
            raise StoreError(f"Cannot reach Milvus at {path} ({self.detail(exc)}). Check that the server is running "
                             "and the URI is right (and MILVUS_TOKEN, if it needs one); nothing was written.") from exc
        if lite:
            _LITE_OPEN[uri] += 1

    def open_client(self) -> MilvusClient:
        """The client, or the :class:`StoreError` ``closed`` once :meth:`close` let go of it."""
        if self.client is None:
            raise StoreError(self.closed)
        return self.client

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One client call; a failure becomes a :class:`StoreError` naming the server and the step. A read is tried
        twice when the connection dropped (a channel the server closed reconnects on the next call)."""
        self.open_client()
        try:
            try:
                return fn(*args, **kwargs)
            except (MilvusException, grpc.RpcError) as exc:
                if getattr(fn, "__name__", "") not in READS or not _unavailable(exc):
                    raise
                time.sleep(0.5)
                return fn(*args, **kwargs)
        except (MilvusException, grpc.RpcError, OSError, ConnectionError) as exc:
            raise self.error(what, exc, opening=getattr(fn, "__name__", "") in OPENING) from exc

    def detail(self, exc: BaseException) -> str:
        """What an error says, with the URI's password and the token masked."""
        text = str(getattr(exc, "message", None) or exc).replace(self.uri, self.path)
        return redact(text, *(s for s in self.secrets if len(s) >= 6))

    def error(self, what: str, exc: BaseException, opening: bool = False) -> StoreError:
        """The :class:`StoreError` for a failed step: damaged data, or a server (or Milvus Lite) that failed. A
        Milvus Lite file is called damaged only when a step that reads its files (``opening``: opening it, listing,
        describing or loading collections) fails with what a damaged file's reader says (:data:`LITE_DAMAGE`)."""
        detail = self.detail(exc)
        if self.lite and opening and not DISK.search(detail) and LITE_DAMAGE.search(detail):
            return StoreError(lite_damaged(self.path, detail))
        if self.lite:
            return StoreError(f"Milvus Lite could not {what} in {self.path} ({detail}). Check that the disk has room "
                              "and the file can be written, and retry; if it fails again, open the store afresh "
                              "(VectorStore(path)) or restart the notebook kernel.")
        if DAMAGE.search(detail) and not _unavailable(exc):
            return StoreError(f"Milvus at {self.path} reports damaged data when asked to {what} ({detail}). Have "
                              f"its storage repaired (or restored from a backup), or {REBUILD_HINT[0].lower()}"
                              f"{REBUILD_HINT[1:]}")
        return StoreError(f"Milvus at {self.path} could not {what} ({detail}). Check that the server is running "
                          "and reachable, then retry.")

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


def lite_damaged(path: str, detail: str) -> str:
    """The message for a Milvus Lite file that cannot be read as it is: what is damaged and how to rebuild."""
    name = Path(path).name
    return (f"The Milvus Lite file {path} is damaged ({detail}). Rebuild the store: notebook 01 with OVERWRITE = "
            "True (VectorStore(path, overwrite=True)) replaces it where Milvus Lite can still open the file; where it "
            f"cannot (this error again), move the file aside (rename it, e.g. to {name}.damaged, and keep it if you "
            f"mean to recover it) and run notebook 01 at the same STORE_PATH. The files beside it in {name}.files "
            "are kept.")


def check_lite_manifests(file: Path, path: str, collection: str) -> None:
    """Refuse a Milvus Lite file in which a collection of the store (``<collection>__g<n>``, ``<collection>__dm``;
    not another store's ``<collection>__x``) has a ``manifest.json`` that cannot be read: Milvus Lite would fall
    back, silently, to its ``manifest.json.prev``, one flush older (a store one write back, or missing its last
    rows), and delete the newer data files. Nothing is read past the manifests; nothing is written."""
    own = re.compile(rf"{re.escape(collection)}(__g\d+|{re.escape(SUFFIX)})")
    for folder in sorted(f for f in (file / "collections").glob(f"{collection}__*") if own.fullmatch(f.name)):
        manifest = folder / "manifest.json"
        if not manifest.exists() and not (folder / "manifest.json.prev").exists():
            continue  # a collection that was never saved
        try:
            payload = json.loads(manifest.read_text(encoding="utf-8"))
            readable = isinstance(payload, dict) and isinstance(payload.get("partitions"), dict)
        except (OSError, ValueError):
            readable = False
        if not readable:
            raise StoreError(lite_damaged(path, f"the manifest of its collection {folder.name!r} cannot be read, so "
                                                "Milvus Lite would silently use an older copy, one write back"))


def mask_uri(uri: str) -> str:
    """``uri`` with the password (or a token given as the user name) in it replaced by ``***``."""
    scheme, sep, rest = uri.partition("://")
    userinfo, at, host = rest.partition("/")[0].rpartition("@")
    if not sep or not at:
        return uri
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user + ':***' if colon else '***'}@{rest[len(userinfo) + 1:]}"


def _userinfo(uri: str) -> list[str]:
    """The secrets in a URI's user part: ``user:password`` and the password, decoded and as written."""
    userinfo = uri.partition("://")[2].partition("/")[0].rpartition("@")[0]
    password = userinfo.partition(":")[2] or userinfo
    return [v for v in {userinfo, password, urllib.parse.unquote(userinfo), urllib.parse.unquote(password)} if v]


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
