"""A Llama-family decoder in Flax NNX, used frozen to embed texts (Llama 2/3, SmolLM2, Mistral,
Qwen2). RMSNorm, rotary position embeddings with the config's base (and Llama 3 frequency
scaling), grouped-query attention, SwiGLU.

Shapes: B sequences, S new tokens, P cached prefix tokens, D width, H query heads,
G key/value heads, K head width, F feed-forward width, V vocabulary.

A forward pass can continue cached prefixes: option suffixes attend to their question's prefix
keys and values, which a causal model computes without looking at the suffix.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

_NEG = -1e30


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    attention_bias: bool = False           # Qwen2: biases on q, k, v
    rope_scaling: dict | None = None       # Llama 3: {"rope_type": "llama3", "factor": ...}
    max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads "
                             f"{self.num_kv_heads}")

    @classmethod
    def from_hf(cls, raw: dict) -> LlamaConfig:
        """From a Hugging Face config.json (LlamaConfig / MistralConfig / Qwen2Config)."""
        heads = raw["num_attention_heads"]
        return cls(vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
                   intermediate_size=raw["intermediate_size"],
                   num_layers=raw["num_hidden_layers"], num_heads=heads,
                   num_kv_heads=raw.get("num_key_value_heads") or heads,
                   head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
                   rope_theta=float(raw.get("rope_theta", 10000.0)),
                   rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
                   attention_bias=bool(raw.get("attention_bias",
                                               raw.get("model_type") == "qwen2")),
                   rope_scaling=raw.get("rope_scaling"),
                   max_position_embeddings=raw.get("max_position_embeddings", 8192))


def rope_frequencies(config: LlamaConfig) -> jax.Array:
    """Inverse frequencies `[K / 2]`, with Llama 3's long-context rescaling when configured."""
    K = config.head_dim
    inv = 1.0 / (config.rope_theta ** (jnp.arange(0, K, 2, dtype=jnp.float32) / K))
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        original = scaling.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        smooth = (original / wavelen - low) / (high - low)
        scaled = jnp.where(wavelen > original / low, inv / factor, inv)
        mid = (wavelen <= original / low) & (wavelen >= original / high)
        inv = jnp.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    elif scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise ValueError(f"unsupported rope_scaling {scaling}")
    return inv


def apply_rope(x_BxSxNxK, positions_BxS, inv_freq):
    """Rotate-half RoPE (Hugging Face layout: first half pairs with second half)."""
    angles = positions_BxS[..., None].astype(jnp.float32) * inv_freq  # B S K/2
    cos = jnp.concatenate([jnp.cos(angles)] * 2, -1)[:, :, None, :]
    sin = jnp.concatenate([jnp.sin(angles)] * 2, -1)[:, :, None, :]
    half = x_BxSxNxK.shape[-1] // 2
    rotated = jnp.concatenate([-x_BxSxNxK[..., half:], x_BxSxNxK[..., :half]], -1)
    return x_BxSxNxK * cos + rotated * sin


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float):
        self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.eps = eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        scale = jax.lax.rsqrt(jnp.mean(x32**2, -1, keepdims=True) + self.eps)
        return (x32 * scale * self.weight[...]).astype(x.dtype)


class Linear(nnx.Module):
    """y = x W^T (+ b), W stored `[out, in]` as in Hugging Face and GGUF files."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False):
        self.weight = nnx.Param(jnp.zeros((d_out, d_in), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((d_out,), jnp.float32)) if bias else None

    def __call__(self, x):
        y = x @ self.weight[...].T
        return y if self.bias is None else y + self.bias[...]


def _fused(x, *layers: Linear):
    """x through several projections as one matmul: one large product keeps the CPU's (and
    any accelerator's) matrix units busier than several narrow ones."""
    weight = jnp.concatenate([layer.weight[...] for layer in layers], 0)
    y = x @ weight.T
    if layers[0].bias is None:
        return y
    return y + jnp.concatenate([layer.bias[...] for layer in layers])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PrefixCache:
    """Per layer, the prefix's keys and values `[L, B, P, G, K]` and which positions are real."""

    keys: jax.Array
    values: jax.Array
    mask_BxP: jax.Array
    length_B: jax.Array

    def first_row_for(self, batch: int) -> PrefixCache:
        """The first row's cache repeated for `batch` sequences (one prefix, many suffixes)."""
        def rows(a, axis):
            return jnp.repeat(jnp.take(a, jnp.array([0]), axis=axis), batch, axis=axis)
        return PrefixCache(rows(self.keys, 1), rows(self.values, 1), rows(self.mask_BxP, 0),
                           rows(self.length_B, 0))


class DecoderLayer(nnx.Module):
    def __init__(self, c: LlamaConfig):
        self.c = c
        D, H, G, K = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        self.input_norm = RMSNorm(D, c.rms_norm_eps)
        self.q = Linear(D, H * K, c.attention_bias)
        self.k = Linear(D, G * K, c.attention_bias)
        self.v = Linear(D, G * K, c.attention_bias)
        self.o = Linear(H * K, D)
        self.post_norm = RMSNorm(D, c.rms_norm_eps)
        self.gate = Linear(D, c.intermediate_size)
        self.up = Linear(D, c.intermediate_size)
        self.down = Linear(c.intermediate_size, D)

    def __call__(self, x_BxSxD, positions_BxS, mask_BxS, inv_freq, prefix_kv=None,
                 segments_BxS=None):
        """Returns (output, (keys, values) of these tokens)."""
        c = self.c
        B, S, _ = x_BxSxD.shape
        H, G, K = c.num_heads, c.num_kv_heads, c.head_dim
        h = self.input_norm(x_BxSxD)
        q, k, v = jnp.split(_fused(h, self.q, self.k, self.v), [H * K, (H + G) * K], -1)
        q = apply_rope(q.reshape(B, S, H, K), positions_BxS, inv_freq)
        k = apply_rope(k.reshape(B, S, G, K), positions_BxS, inv_freq)
        v = v.reshape(B, S, G, K)
        causal_SxS = jnp.tril(jnp.ones((S, S), bool))
        allowed_BxSxS = causal_SxS[None] & mask_BxS[:, None, :]
        if segments_BxS is not None:  # packed sequences: a token sees its own segment only
            allowed_BxSxS &= segments_BxS[:, :, None] == segments_BxS[:, None, :]
        keys, values, allowed = k, v, allowed_BxSxS
        if prefix_kv is not None:
            prefix_k, prefix_v, prefix_mask_BxP = prefix_kv
            keys = jnp.concatenate([prefix_k, k], 1)
            values = jnp.concatenate([prefix_v, v], 1)
            allowed = jnp.concatenate(
                [jnp.broadcast_to(prefix_mask_BxP[:, None, :], (B, S, prefix_mask_BxP.shape[1])),
                 allowed_BxSxS], -1)
        q = q.reshape(B, S, G, H // G, K)
        logits = jnp.einsum("bsgrk,btgk->bgrst", q, keys) / math.sqrt(K)
        logits = jnp.where(allowed[:, None, None], logits, _NEG)
        weights = jax.nn.softmax(logits.astype(jnp.float32), -1).astype(values.dtype)
        attended = jnp.einsum("bgrst,btgk->bsgrk", weights, values).reshape(B, S, H * K)
        x = x_BxSxD + self.o(attended)
        h = self.post_norm(x)
        gate, up = jnp.split(_fused(h, self.gate, self.up), 2, -1)
        x = x + self.down(jax.nn.silu(gate) * up)
        return x, (k, v)


class LlamaModel(nnx.Module):
    """The decoder stack, and its language-model head for next-token logits (`logits`): a
    separate output matrix where the model has one, else the input embedding (tied)."""

    def __init__(self, config: LlamaConfig, tied_output: bool = True):
        self.config = config
        self.embed = nnx.Param(jnp.zeros((config.vocab_size, config.hidden_size), jnp.float32))
        self.layers = nnx.List([DecoderLayer(config) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.output = None if tied_output else nnx.Param(
            jnp.zeros((config.vocab_size, config.hidden_size), jnp.float32))

    def logits(self, hidden_NxD, token_ids=None):
        """Next-token logits `[N, V]` from final-norm hidden states (`layer=-1`), or only the
        columns of `token_ids` `[N, len(token_ids)]`: scoring a few answer letters needs no
        product with the whole vocabulary."""
        weight_VxD = (self.embed if self.output is None else self.output)[...]
        if token_ids is not None:
            weight_VxD = weight_VxD[jnp.asarray(token_ids)]
        return hidden_NxD.astype(jnp.float32) @ weight_VxD.T

    def __call__(self, ids_BxS, mask_BxS, positions_BxS=None, prefix: PrefixCache | None = None,
                 layer: int = -1, keep_cache: bool = False, segments_BxS=None):
        """Hidden states `[B, S, D]` of `layer` in Hugging Face's numbering (0 = embeddings,
        num_layers = after the final norm; -1 = last), and optionally this pass's cache."""
        c = self.config
        n = c.num_layers + 1
        layer = layer % n
        if positions_BxS is None:
            offset = 0 if prefix is None else prefix.length_B[:, None]
            positions_BxS = offset + jnp.arange(ids_BxS.shape[1])[None]
        inv_freq = rope_frequencies(c)
        x = self.embed[...][ids_BxS]
        keys, values = [], []
        out = x if layer == 0 else None
        for i, block in enumerate(self.layers):
            prefix_kv = None if prefix is None else (prefix.keys[i], prefix.values[i],
                                                     prefix.mask_BxP)
            x, (k, v) = block(x, positions_BxS, mask_BxS, inv_freq, prefix_kv, segments_BxS)
            keys.append(k)
            values.append(v)
            if i + 1 == layer and layer < c.num_layers:
                out = x
        if layer == c.num_layers:
            out = self.norm(x)
        cache = None
        if keep_cache:
            cache = PrefixCache(jnp.stack(keys), jnp.stack(values), mask_BxS,
                                mask_BxS.sum(-1).astype(jnp.int32))
        return out, cache
