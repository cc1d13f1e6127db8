"""The records a store holds: ids (content hashes unless given), texts and JSON metadata, checked before any
write, and the corpus fingerprint models are tied to. Shared by every store backend."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from dmhelpers.utils.errors import InputError


class Hit(NamedTuple):
    """One search result: the chunk's id, text, cosine similarity score and metadata."""

    id: str
    text: str
    score: float
    metadata: dict[str, Any]


def text_id(text: str) -> str:
    """A stable id for a chunk: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_utf8(what: str, text: str) -> None:
    """Refuse a string that cannot be written as UTF-8 (a lone surrogate such as ``"\\ud800"``, which Python
    strings allow but no file or database does), naming where it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what} holds a lone surrogate {text[exc.start]!r} at character {exc.start}, which cannot "
                         "be stored as UTF-8 (it often comes from decoding bytes with errors='surrogateescape'). "
                         "Clean it first, e.g. text.encode('utf-8', 'replace').decode('utf-8').") from None


def corpus_fingerprint(ids: Sequence[str], texts: Sequence[str]) -> str:
    """A hash of a corpus's ids and texts, so a model can tell the corpus it was trained on."""
    digest = hashlib.sha256()
    for i, t in zip(ids, texts):
        digest.update(i.encode() + b"\0" + t.encode() + b"\0")
    return digest.hexdigest()[:16]


def check_records(texts: Sequence[str], metadatas: Sequence[dict[str, Any]] | None, ids: Sequence[str] | None
                  ) -> tuple[list[str], list[dict[str, Any]], list[str] | None]:
    """``add_texts``' arguments as lists, checked on their own (ids stay ``None`` when none were given; see
    :func:`assign_ids` for the store's ids); raises :class:`InputError` naming the problem."""
    if isinstance(texts, str) or texts is None:
        what = "a single string" if isinstance(texts, str) else "None"
        raise InputError(f"add_texts() takes a list of texts, got {what}. Wrap one text: add_texts([text]).")
    texts = list(texts)
    if not texts:
        raise InputError("add_texts() got no texts. Check the crawl and split steps produced chunks.")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise InputError(f"Text {i} is {'empty' if isinstance(t, str) else type(t).__name__}: every text "
                             "must be a non-empty string. Drop empty chunks before adding.")
        check_utf8(f"Text {i}", t)
    metadatas = metadatas if metadatas is None or isinstance(metadatas, (str, dict)) else list(metadatas)
    if isinstance(metadatas, (str, dict)) or any(m is not None and not isinstance(m, dict)
                                                 for m in metadatas or ()):
        raise InputError("metadatas must be a list with one dict (or None) per text. Pass e.g. "
                         "metadatas=[{'source': url}, ...], or None.")
    metadatas = [{} for _ in texts] if metadatas is None else [dict(m or {}) for m in metadatas]
    if len(metadatas) != len(texts):
        raise InputError(f"Got {len(texts)} texts but {len(metadatas)} metadatas; pass one dict per text.")
    for i, m in enumerate(metadatas):
        try:
            json.dumps(m, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            why = "NaN and infinity are not JSON numbers: use None or a string" if "Out of range float" in str(
                exc) else "use strings (valid UTF-8, no lone surrogates), numbers, lists and dicts"
            raise InputError(f"Metadata {i} cannot be stored as JSON ({exc}). Fix it: {why}.") from exc
    if ids is not None:
        if isinstance(ids, (str, bytes, dict)):
            raise InputError(f"ids must be a list with one string per text, got a single {type(ids).__name__} "
                             f"{ids!r:.40}. Pass e.g. ids=['chunk-1', ...] (ids=[{ids!r:.40}] for one text), or "
                             "ids=None to generate them.")
        ids = list(ids)
        if len(ids) != len(texts):
            raise InputError(f"Got {len(texts)} texts but {len(ids)} ids; pass one id per text, or ids=None.")
        if any(not isinstance(i, str) or not i for i in ids):
            raise InputError("Every id must be a non-empty string. Pass string ids, or ids=None to generate them.")
        for n, i in enumerate(ids):
            check_utf8(f"Id {n}", i)
        seen: set[str] = set()
        _refuse_duplicates({i for i in ids if i in seen or seen.add(i)})
    return texts, metadatas, ids


def assign_ids(texts: list[str], ids: list[str] | None, existing: set[str]) -> list[str]:
    """The ids of checked records in a store that holds ``existing``: the given ids, refused if any is taken, or
    content hashes (``<hash>-2``, ``-3``, ... for a text already there)."""
    if ids is not None:
        _refuse_duplicates(set(ids) & existing)
        return ids
    made, taken = [], set(existing)
    for t in texts:
        base = new = text_id(t)
        n = 1
        while new in taken:
            n += 1
            new = f"{base}-{n}"
        taken.add(new)
        made.append(new)
    return made


def _refuse_duplicates(dupes: set[str]) -> None:
    if dupes:
        raise InputError(f"Duplicate ids {sorted(dupes)[:5]}: each id may appear once in the store. Use new ids, "
                         "or ids=None to generate them.")
