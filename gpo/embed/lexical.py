"""A lexical option embedder: hashed TF-IDF of words and word pairs. No model, no download.

It is the honest floor for methods that need option embeddings (the kNN baseline) before a
frozen LLM embedder is available, and a fast stand-in in tests.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from gpo.data.survey import Survey

_WORD = re.compile(r"[a-z0-9']+")


def _features(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


def _hashed_counts(texts: list[str], dim: int) -> np.ndarray:
    counts = np.zeros((len(texts), dim))
    for i, text in enumerate(texts):
        for feature in _features(text):
            counts[i, zlib.crc32(feature.encode()) % dim] += 1.0
    return counts


def lexical_option_embeddings(survey: Survey, dim: int = 1024,
                              question_weight: float = 0.5) -> np.ndarray:
    """`[Q, O, dim]` TF-IDF vectors of each answer option, plus its question's text (weighted).

    Padded options get zero vectors.
    """
    Q, O = len(survey.questions), survey.max_options
    options = [o for q in survey.questions for o in q.answer_options]
    option_tf = _hashed_counts(options, dim)
    question_tf = _hashed_counts([q.text for q in survey.questions], dim)
    document_frequency = (option_tf > 0).sum(0) + (question_tf > 0).sum(0)
    idf = np.log((1 + len(options) + Q) / (1 + document_frequency)) + 1.0
    out = np.zeros((Q, O, dim))
    row = 0
    for qi, question in enumerate(survey.questions):
        for oi in range(len(question.answer_options)):
            out[qi, oi] = (option_tf[row] + question_weight * question_tf[qi]) * idf
            row += 1
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    return np.where(norms > 0, out / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
