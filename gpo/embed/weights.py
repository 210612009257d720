"""Load Llama-family weights and tokenizers without torch: GGUF files (via the `gguf` package,
dequantised to float32) and Hugging Face directories (config.json + *.safetensors)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from gpo.embed.llama import LlamaConfig, LlamaModel


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and what is wrong."""


@dataclasses.dataclass
class LoadedModel:
    model: LlamaModel
    tokenizer: Tokenizer
    chat_template: str | None
    special_tokens: dict[str, str]
    model_id: str
    digest: str        # identifies the weights, for the embedding cache


# -- GGUF -------------------------------------------------------------------------------------

def _field(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    return value


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (its convert script interleaves rotary halves)."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _file_digest(path: Path, chunk: int = 1 << 24) -> str:
    """sha1 of the first and last 16 MiB and the size: cheap, and changes when weights do."""
    size = path.stat().st_size
    h = hashlib.sha1(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:16]


def load_gguf(path: str | Path) -> LoadedModel:
    import gguf
    from gguf.quants import dequantize

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # the gguf package raises several types on bad files
        raise ModelFileError(f"{path}: not a readable GGUF file ({err})") from err
    arch = _field(reader, "general.architecture")
    if arch not in ("llama", "mistral", "qwen2"):
        raise ModelFileError(f"{path}: architecture {arch!r} is not a supported Llama family")
    p = f"{arch}."
    heads = int(_field(reader, p + "attention.head_count"))
    kv_heads = int(_field(reader, p + "attention.head_count_kv", heads))
    hidden = int(_field(reader, p + "embedding_length"))
    tensors = {t.name: t for t in reader.tensors}

    def weight(name: str) -> np.ndarray:
        if name not in tensors:
            raise ModelFileError(f"{path}: tensor {name!r} is missing")
        t = tensors[name]
        return np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(
            [int(x) for x in reversed(t.shape)])

    config = LlamaConfig(
        vocab_size=int(tensors["token_embd.weight"].shape[1]), hidden_size=hidden,
        intermediate_size=int(_field(reader, p + "feed_forward_length")),
        num_layers=int(_field(reader, p + "block_count")), num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(_field(reader, p + "rope.dimension_count", hidden // heads)),
        rope_theta=float(_field(reader, p + "rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon", 1e-5)),
        attention_bias="blk.0.attn_q.bias" in tensors,
        max_position_embeddings=int(_field(reader, p + "context_length", 8192)))
    tied = "output.weight" not in tensors  # llama.cpp omits the output matrix when tied
    model = nnx.eval_shape(lambda: LlamaModel(config, tied_output=tied))
    state = {"embed": weight("token_embd.weight"), "norm": weight("output_norm.weight")}
    if not tied:
        state["output"] = weight("output.weight")
    # llama.cpp permutes q/k rows for Llama-style rotary layouts, not for Qwen2.
    unpermute = (lambda w, n: w) if arch == "qwen2" else _unpermute
    for i in range(config.num_layers):
        b = f"blk.{i}."
        state[i] = {
            "input_norm": weight(b + "attn_norm.weight"),
            "post_norm": weight(b + "ffn_norm.weight"),
            "q": unpermute(weight(b + "attn_q.weight"), heads),
            "k": unpermute(weight(b + "attn_k.weight"), kv_heads),
            "v": weight(b + "attn_v.weight"), "o": weight(b + "attn_output.weight"),
            "gate": weight(b + "ffn_gate.weight"), "up": weight(b + "ffn_up.weight"),
            "down": weight(b + "ffn_down.weight"),
        }
        if config.attention_bias:
            for name in ("q", "k", "v"):
                state[i][name + "_bias"] = weight(f"{b}attn_{name}.bias")
    model = _materialise(model, state)
    tokenizer, special = _gguf_tokenizer(reader, path)
    return LoadedModel(model, tokenizer, _field(reader, "tokenizer.chat_template"), special,
                       model_id=str(_field(reader, "general.name", path.stem)),
                       digest=_file_digest(path))


def _gguf_tokenizer(reader, path: Path) -> tuple[Tokenizer, dict[str, str]]:
    """Byte-level BPE from the GGUF's own vocabulary and merges (as transformers builds it)."""
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelFileError(f"{path}: tokenizer {kind!r} is not supported (only byte-level BPE)")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                     fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, types) if kind == 3]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t in control])
    special = {}
    for name in ("bos", "eos", "padding"):
        index = _field(reader, f"tokenizer.ggml.{name}_token_id")
        if index is not None:
            special[name] = tokens[int(index)]
    return tokenizer, special


# -- Hugging Face directory --------------------------------------------------------------------

def load_hf_directory(path: str | Path) -> LoadedModel:
    """config.json + *.safetensors + a tokenizer that transformers' AutoTokenizer reads."""
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face model folder)")
    raw = json.loads((path / "config.json").read_text())
    config = LlamaConfig.from_hf(raw)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files")
    weights: dict[str, np.ndarray] = {}
    for f in files:
        weights.update({k: v.astype(np.float32) for k, v in load_file(f).items()})

    def weight(name: str) -> np.ndarray:
        for key in (name, f"model.{name}"):
            if key in weights:
                return weights[key]
        raise ModelFileError(f"{path}: tensor {name!r} is missing")

    state = {"embed": weight("embed_tokens.weight"), "norm": weight("norm.weight")}
    tied = raw.get("tie_word_embeddings", False) or "lm_head.weight" not in weights
    if not tied:
        state["output"] = weights["lm_head.weight"]
    for i in range(config.num_layers):
        b = f"layers.{i}."
        state[i] = {
            "input_norm": weight(b + "input_layernorm.weight"),
            "post_norm": weight(b + "post_attention_layernorm.weight"),
            **{n: weight(f"{b}self_attn.{n}_proj.weight") for n in ("q", "k", "v", "o")},
            **{n: weight(f"{b}mlp.{n}_proj.weight") for n in ("gate", "up", "down")},
        }
        if config.attention_bias:
            for n in ("q", "k", "v"):
                state[i][n + "_bias"] = weight(f"{b}self_attn.{n}_proj.bias")
    model = _materialise(nnx.eval_shape(lambda: LlamaModel(config, tied_output=tied)), state)
    tok = AutoTokenizer.from_pretrained(path)
    special = {k: v for k, v in (("bos", tok.bos_token), ("eos", tok.eos_token),
                                 ("padding", tok.pad_token)) if v}
    digest = hashlib.sha1("".join(_file_digest(f) for f in files).encode()).hexdigest()[:16]
    return LoadedModel(model, tok.backend_tokenizer, tok.chat_template, special,
                       model_id=raw.get("_name_or_path") or path.name, digest=digest)


def _materialise(abstract: LlamaModel, state: dict) -> LlamaModel:
    """Fill an abstract model's parameters from arrays, checking every shape."""
    def put(param: nnx.Param, value: np.ndarray, name: str):
        if tuple(param.shape) != value.shape:
            raise ModelFileError(f"tensor {name}: shape {value.shape}, expected {param.shape}")
        param.set_value(jnp.asarray(value)) if hasattr(param, "set_value") else setattr(
            param, "value", jnp.asarray(value))

    put(abstract.embed, state["embed"], "embed")
    put(abstract.norm.weight, state["norm"], "norm")
    if abstract.output is not None:
        put(abstract.output, state["output"], "output")
    for i, layer in enumerate(abstract.layers):
        s = state[i]
        put(layer.input_norm.weight, s["input_norm"], f"{i}.input_norm")
        put(layer.post_norm.weight, s["post_norm"], f"{i}.post_norm")
        for n in ("q", "k", "v", "o", "gate", "up", "down"):
            put(getattr(layer, n).weight, s[n], f"{i}.{n}")
        for n in ("q", "k", "v"):
            if getattr(layer, n).bias is not None:
                put(getattr(layer, n).bias, s[n + "_bias"], f"{i}.{n}_bias")
    return abstract
