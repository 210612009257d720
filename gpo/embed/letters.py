"""An LLM's own answer distribution over a question's options: the next-token probabilities of
the option letters ("A", "B", ...) after a multiple-choice prompt, renormalised over the
question's options (as OpinionQA and GPO's prompting baselines read them).

A prompt is a prefix (what many prompts share: an instruction, a persona text, a group's
context answers) and a suffix (one question, its lettered options, the answer cue). A causal
model's prefix states do not depend on the suffix, so each distinct prefix runs once and its
keys and values are reused by every suffix after it. Distributions are cached on disk by the
prompt's content and the model's weights.

Shapes: B prompts per pass, S suffix tokens, P prefix tokens, D width, L letters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import string
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from gpo.embed.llm import EmbeddingCache, load_llm, pad_tokens
from gpo.sharding import data_sharded, make_mesh, replicated

LETTERS = string.ascii_uppercase
_PREFIX_BUCKET = 64  # prefixes are padded to multiples of this: few compiled shapes


@dataclasses.dataclass(frozen=True)
class LetterPrompt:
    prefix: str     # shared by many prompts; ends where the question begins
    suffix: str     # the question, its lettered options and the answer cue
    n_options: int  # letters A.. that count


class LetterScorer:
    """Option-letter distributions from a frozen Llama-family LLM (see module doc)."""

    def __init__(self, name: str = "smollm2", batch_size: int = 32,
                 cache_dir: str | Path | None = None, progress: bool = True):
        self.loaded = load_llm(name)
        self.batch_size, self.progress = batch_size, progress
        self.max_length = self.loaded.model.config.max_position_embeddings
        self.letter_ids_LxV = self._letter_tokens()
        template = hashlib.sha1((self.loaded.chat_template or "").encode()).hexdigest()[:8]
        self.spec = {"kind": "option letters", "model": name, "model_id": self.loaded.model_id,
                     "weights": self.loaded.digest, "template": template, "format": "v1"}
        self.cache = EmbeddingCache(cache_dir, self.spec) if cache_dir else None
        self.mesh = make_mesh()
        self._graphdef, self._state = nnx.split(self.loaded.model)
        self._state = jax.device_put(self._state, replicated(self.mesh))

    @property
    def chat_template(self) -> str | None:
        return self.loaded.chat_template

    @property
    def special_tokens(self) -> dict[str, str]:
        return self.loaded.special_tokens

    def tokenize(self, text: str) -> list[int]:
        return self.loaded.tokenizer.encode(text, add_special_tokens=False).ids

    def _letter_tokens(self) -> np.ndarray:
        """`[26, 2]` token ids of each letter alone and after a space (-1: not one token):
        a model may answer "B" or " B", and both mean the same option."""
        ids = np.full((len(LETTERS), 2), -1, np.int32)
        for i, letter in enumerate(LETTERS):
            for j, text in enumerate((letter, " " + letter)):
                tokens = self.tokenize(text)
                if len(tokens) == 1:
                    ids[i, j] = tokens[0]
        if (ids < 0).all(1).any():
            missing = [LETTERS[i] for i in np.flatnonzero((ids < 0).all(1))]
            raise ValueError(f"{self.loaded.model_id}: letters {missing} are not single tokens")
        return ids

    def distributions(self, prompts: Sequence[LetterPrompt], desc: str = "LLM answers"
                      ) -> list[np.ndarray]:
        """Per prompt, the probabilities `[n_options]` of its option letters (summing to 1)."""
        for p in prompts:
            if not 2 <= p.n_options <= len(LETTERS):
                raise ValueError(f"a prompt has {p.n_options} options; 2 to {len(LETTERS)} "
                                 "can be lettered")
        keys = [hashlib.sha1(f"{p.prefix}\x00{p.suffix}".encode()).hexdigest() for p in prompts]
        found = self.cache.get(keys) if self.cache else {}
        todo: dict[str, list[int]] = {}  # prefix -> prompts still to score, each once
        for key, i in dict((key, i) for i, key in enumerate(keys)).items():
            if key not in found:
                todo.setdefault(prompts[i].prefix, []).append(i)
        bar = tqdm(total=sum(map(len, todo.values())), desc=desc,
                   disable=not self.progress or not todo)
        for prefix, rows in todo.items():
            prefix_ids = self.tokenize(prefix)
            cache = self._prefix_cache(prefix_ids)
            rows = sorted(rows, key=lambda i: len(prompts[i].suffix))  # similar lengths batch
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                suffix_ids = [self._suffix_ids(prefix, prefix_ids, prompts[i].suffix)
                              for i in chunk]
                logits = self._suffix_logits(cache, suffix_ids)
                new = {keys[i]: row for i, row in zip(chunk, logits)}
                found.update(new)
                if self.cache:
                    self.cache.put(new)
                bar.update(len(chunk))
        bar.close()
        out = []
        for p, key in zip(prompts, keys):
            logits = np.asarray(found[key][: p.n_options], np.float64)
            e = np.exp(logits - logits.max())
            out.append(e / e.sum())
        return out

    def _prefix_cache(self, ids: list[int]):
        if not ids:
            raise ValueError("an empty prompt prefix (a prompt needs at least one shared token)")
        if len(ids) >= self.max_length:
            raise ValueError(f"a prompt prefix of {len(ids)} tokens exceeds the model's context "
                             f"window of {self.max_length}")
        padded = np.zeros((1, -(-len(ids) // _PREFIX_BUCKET) * _PREFIX_BUCKET), np.int32)
        mask = np.zeros(padded.shape, bool)
        padded[0, : len(ids)], mask[0, : len(ids)] = ids, True
        return _prefix_pass(self._graphdef, self._state, jnp.asarray(padded),
                            jnp.asarray(mask))

    def _suffix_ids(self, prefix: str, prefix_ids: list[int], suffix: str) -> list[int]:
        """The suffix's tokens as they fall in the whole prompt: BPE may merge across the
        boundary, so the prompt is tokenised whole and must begin with the prefix's tokens."""
        whole = self.tokenize(prefix + suffix)
        n = len(prefix_ids)
        if whole[:n] != prefix_ids or len(whole) == n:
            raise ValueError("a prompt does not split into prefix and suffix tokens cleanly "
                             f"(suffix {suffix[:60]!r}); end the prefix before a line break")
        if len(whole) > self.max_length:
            raise ValueError(f"a prompt of {len(whole)} tokens exceeds the model's context "
                             f"window of {self.max_length}")
        return whole[n:]

    def _suffix_logits(self, cache, suffixes: list[list[int]]) -> np.ndarray:
        """`[len(suffixes), 26]` letter logits (each letter's token variants combined)."""
        devices = self.mesh.shape["data"]
        ids, mask = pad_tokens(suffixes, devices)
        last_B = np.maximum(mask.sum(1) - 1, 0).astype(np.int32)
        shard = data_sharded(self.mesh)
        out = _letter_logits(self._graphdef, self._state, cache,
                             *(jax.device_put(a, shard) for a in (ids, mask, last_B)),
                             jnp.asarray(self.letter_ids_LxV))
        return np.asarray(out)[: len(suffixes)]


@jax.jit
def _prefix_pass(graphdef, state, ids, mask):
    _, cache = nnx.merge(graphdef, state)(ids, mask, keep_cache=True)
    return cache


@jax.jit
def _letter_logits(graphdef, state, prefix, ids_BxS, mask_BxS, last_B, letter_ids_Lx2):
    """One prefix's cache (a batch of one) read by every suffix of the batch."""
    model = nnx.merge(graphdef, state)
    hidden_BxSxD, _ = model(ids_BxS, mask_BxS, prefix=prefix.first_row_for(len(last_B)))
    hidden_BxD = jnp.take_along_axis(hidden_BxSxD, last_B[:, None, None], 1)[:, 0]
    logits = model.logits(hidden_BxD, jnp.maximum(letter_ids_Lx2, 0).reshape(-1))
    logits = jnp.where(letter_ids_Lx2.reshape(-1) >= 0, logits, -jnp.inf)
    return jax.nn.logsumexp(logits.reshape(len(last_B), *letter_ids_Lx2.shape), -1)
