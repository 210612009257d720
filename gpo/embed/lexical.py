"""A lexical embedder: hashed, log-scaled counts of words and word pairs. No model, no download,
no fitted state, so new texts embed exactly like the training survey's.

It is the honest floor for methods that need option embeddings (the kNN baseline) where no
frozen LLM is at hand, and a fast stand-in in tests.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")


def _hashed_counts(text: str, dim: int) -> np.ndarray:
    words = _WORD.findall(text.lower())
    counts = np.zeros(dim)
    for feature in words + [f"{a}_{b}" for a, b in zip(words, words[1:])]:
        counts[zlib.crc32(feature.encode()) % dim] += 1.0
    return np.log1p(counts)


class LexicalEmbedder:
    """Option vector = hashed words of the option + `question_weight` x those of the question."""

    def __init__(self, dim: int = 1024, question_weight: float = 0.5):
        self.dim = dim
        self.question_weight = question_weight
        self.spec = {"model": "lexical", "dim": dim, "question_weight": question_weight}

    def embed_questions(self, questions: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        out = []
        for text, options in questions:
            question_vec = self.question_weight * _hashed_counts(text, self.dim)
            vecs = np.stack([_hashed_counts(o, self.dim) + question_vec for o in options])
            norms = np.linalg.norm(vecs, axis=-1, keepdims=True)
            out.append((vecs / np.maximum(norms, 1e-12)).astype(np.float32))
        return out
