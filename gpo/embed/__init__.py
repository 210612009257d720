"""Option embeddings: the `Embedder` protocol, the registry of embedders, and the survey-wide
`[Q, O, E]` array every head and baseline reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from gpo.data.survey import Survey
from gpo.embed.lexical import LexicalEmbedder


class Embedder(Protocol):
    dim: int
    spec: dict  # what produced the vectors: model id, template, pooling ...

    def embed_questions(self, questions: Sequence[tuple[str, Sequence[str]]]
                        ) -> list[np.ndarray]:
        """Per question (text, answer options): float32 `[n_options, dim]`."""
        ...


def make_embedder(name: str, **options) -> Embedder:
    """'lexical' (no model), or a frozen LLM (see gpo.embed.llm) by name or path."""
    if name == "lexical":
        return LexicalEmbedder(**options)
    from gpo.embed.llm import make_llm_embedder  # imports the LLM stack only when needed
    return make_llm_embedder(name, **options)


def embed_survey(survey: Survey, embedder: Embedder) -> np.ndarray:
    """`[Q, O, E]` embeddings of every answer option; padded options are zero."""
    vectors = embedder.embed_questions([(q.text, q.answer_options) for q in survey.questions])
    out = np.zeros((len(survey.questions), survey.max_options, embedder.dim), np.float32)
    for qi, v in enumerate(vectors):
        out[qi, : len(v)] = v
    return out
