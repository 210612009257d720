"""Embedding throughput on OpinionQA option texts, one run, same machine:
transformers + torch (one full text per option), our JAX encoder without prefix sharing, and
with it. Also checks the vectors agree and reports FLOP/s against a measured matmul peak.

    python experiments/bench_embed.py --data-dir ../shared/data/opinionqa [--questions 684]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from gpo.data import load_opinionqa
from gpo.embed.llm import LLMEmbedder, format_prompt, smollm2_path


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    import jax
    import jax.numpy as jnp
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def torch_reference(texts: list[str], batch_size: int) -> tuple[float, list[np.ndarray]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = smollm2_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32).eval()
    torch.set_num_threads(torch.get_num_threads())
    out = []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tok(texts[i:i + batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=False)
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
            mask = batch["attention_mask"][..., None]
            out.extend(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--questions", type=int, default=48, help="684 for every question")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    survey = load_opinionqa(args.data_dir)
    questions = [(q.text, q.answer_options) for q in survey.questions[: args.questions]]

    ours = LLMEmbedder("smollm2", progress=False, batch_size=args.batch_size)
    loaded = ours.loaded
    parts = [format_prompt(t, o, loaded.chat_template, loaded.special_tokens)
             for t, o in questions]
    texts = [p.prefix + s for p in parts for s in p.suffixes]
    tokens = sum(len(ours.tokenize(t)) for t in texts)
    prefixes = [ours.tokenize(p.prefix) for p in parts]
    header = len(os.path.commonprefix(prefixes))  # run once per batch of questions
    batches = -(-len(parts) // args.batch_size)
    prefix_tokens = sum(len(pre) + sum(len(ours.tokenize(s)) for s in p.suffixes)
                        for pre, p in zip(prefixes, parts)) - header * (len(parts) - batches)
    c = loaded.model.config
    params = c.num_layers * (2 * c.hidden_size * c.num_heads * c.head_dim
                             + 2 * c.hidden_size * c.num_kv_heads * c.head_dim
                             + 3 * c.hidden_size * c.intermediate_size)

    timings = {}
    ours.embed_questions(questions[:2])  # compile common shapes outside the clock
    for shared in (False, True):
        ours.prefix_sharing = shared
        ours.embed_questions(questions)  # warm: compile every bucket shape
        start = time.perf_counter()
        vectors = ours.embed_questions(questions)
        timings["ours, prefix sharing" if shared else "ours, full sequences"] = (
            time.perf_counter() - start, prefix_tokens if shared else tokens, vectors)
    torch_seconds, torch_vectors = torch_reference(texts, args.batch_size)
    timings["transformers + torch"] = (torch_seconds, tokens, None)

    peak = matmul_peak_gflops()
    base = len(texts) / torch_seconds
    print(f"{len(questions)} OpinionQA questions, {len(texts)} option texts, {tokens} tokens "
          f"({prefix_tokens} with shared header and prefixes); matmul peak here {peak:.0f} GFLOP/s")
    print(f"{'method':<24} {'texts/s':>8} {'tokens/s':>9} {'vs torch':>9} {'GFLOP/s':>8} "
          f"{'of peak':>8}")
    for name, (seconds, processed, _) in timings.items():
        gflops = 2 * params * processed / seconds / 1e9
        print(f"{name:<24} {len(texts) / seconds:8.1f} {tokens / seconds:9.0f} "
              f"{len(texts) / seconds / base:8.2f}x {gflops:8.1f} {gflops / peak:7.0%}")
    shared_vectors = np.concatenate(timings["ours, prefix sharing"][2])
    full_vectors = np.concatenate(timings["ours, full sequences"][2])
    print(f"max |shared - full| = {np.abs(shared_vectors - full_vectors).max():.2e}; "
          f"max |ours - torch| = {np.abs(full_vectors - np.stack(torch_vectors)).max():.2e}")


if __name__ == "__main__":
    main()
