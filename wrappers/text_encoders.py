"""Text encoders for :class:`~hiper_gym.wrappers.EncodeText`: a batch of strings to vectors."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence

import numpy as np

#: ``encoder(texts) -> array of shape (len(texts), dim)``; any callable of this form works, e.g.
#: ``lambda texts: sentence_transformer.encode(list(texts))``.
TextEncoder = Callable[[Sequence[str]], np.ndarray]

_TOKEN = re.compile(r"[a-z0-9]+")


class HashingBagOfWords:
    """A signed hashing bag of words (and word n-grams), L2-normalised: no vocabulary, no download.

    Each n-gram is hashed with CRC-32 (stable across processes, unlike ``hash``) into one of
    ``dim`` buckets with a hash-dependent sign, so collisions cancel on average. Bigrams keep
    "mug 1" apart from "mug 2".

    Example:
        >>> encode = HashingBagOfWords(dim=64)
        >>> vectors = encode(["go to shelf 1", "go to shelf 2", ""])
        >>> vectors.shape, vectors.dtype.name
        ((3, 64), 'float32')
        >>> bool((vectors[0] != vectors[1]).any()), float(abs(vectors[2]).sum())
        (True, 0.0)
    """

    def __init__(self, dim: int = 256, max_ngram: int = 2) -> None:
        """Configure the encoder.

        Args:
            dim: Number of hash buckets (the vector length).
            max_ngram: Longest word n-gram hashed (1 = words only).
        """
        if dim < 1 or max_ngram < 1:
            raise ValueError(f"dim and max_ngram must be >= 1, got {dim} and {max_ngram}")
        self.dim = dim
        self.max_ngram = max_ngram

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` into an array of shape ``(len(texts), dim)``, values in [-1, 1]."""
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for gram in self._ngrams(text):
                code = zlib.crc32(gram.encode())
                vectors[row, code % self.dim] += 1.0 if (code >> 31) & 1 else -1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=vectors, where=norms > 0)

    def _ngrams(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower())
        return [
            " ".join(words[start : start + n])
            for n in range(1, self.max_ngram + 1)
            for start in range(len(words) - n + 1)
        ]
