"""Option embeddings: the `Embedder` protocol, the registry of embedders, and the survey-wide
`[Q, O, E]` array every head and baseline reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from gpo.config import EmbedConfig
from gpo.data.survey import Survey
from gpo.embed.lexical import LexicalEmbedder


class Embedder(Protocol):
    dim: int
    spec: dict  # what produced the vectors: model id, template, pooling ...

    def embed_questions(self, questions: Sequence[tuple[str, Sequence[str]]]
                        ) -> list[np.ndarray]:
        """Per question (text, answer options): float32 `[n_options, dim]`."""
        ...


def make_embedder(config: EmbedConfig | str) -> Embedder:
    """The embedder a config names: 'lexical' (no model), 'minilm' or a BERT folder
    (gpo.embed.bert), or a frozen Llama-family LLM: 'smollm2', a .gguf, an HF folder."""
    if isinstance(config, str):
        config = EmbedConfig(model=config)
    if config.model == "lexical":
        return LexicalEmbedder(dim=config.dim)
    if config.model == "minilm" or _is_bert_folder(config.model):
        from gpo.embed.bert import BertEmbedder
        return BertEmbedder(None if config.model == "minilm" else config.model,
                            batch_size=config.batch_size)
    from gpo.embed.llm import LLMEmbedder  # imports the LLM stack only when needed
    return LLMEmbedder(config.model, pooling=config.pooling, layer=config.layer,
                       batch_size=config.batch_size, cache_dir=config.cache_dir)


def _is_bert_folder(name: str) -> bool:
    config = Path(name) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "bert"


def embed_survey(survey: Survey, embedder: Embedder) -> np.ndarray:
    """`[Q, O, E]` embeddings of every answer option; padded options are zero."""
    vectors = embedder.embed_questions([(q.text, q.answer_options) for q in survey.questions])
    out = np.zeros((len(survey.questions), survey.max_options, embedder.dim), np.float32)
    for qi, v in enumerate(vectors):
        out[qi, : len(v)] = v
    return out
