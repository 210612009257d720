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


def measure(data_dir: str, n_questions: int = 48, batch_size: int = 16) -> dict:
    """Texts/s of torch, ours without and with prefix sharing, on the first OpinionQA questions,
    plus the vectors' agreement and the FLOP rates."""
    survey = load_opinionqa(data_dir)
    questions = [(q.text, q.answer_options) for q in survey.questions[:n_questions]]

    ours = LLMEmbedder("smollm2", progress=False, batch_size=batch_size)
    loaded = ours.loaded
    parts = [format_prompt(t, o, loaded.chat_template, loaded.special_tokens)
             for t, o in questions]
    texts = [p.prefix + s for p in parts for s in p.suffixes]
    tokens = sum(len(ours.tokenize(t)) for t in texts)
    prefixes = [ours.tokenize(p.prefix) for p in parts]
    header = len(os.path.commonprefix(prefixes))  # run once per batch of questions
    batches = -(-len(parts) // batch_size)
    prefix_tokens = sum(len(pre) + sum(len(ours.tokenize(s)) for s in p.suffixes)
                        for pre, p in zip(prefixes, parts)) - header * (len(parts) - batches)
    c = loaded.model.config
    params = c.num_layers * (2 * c.hidden_size * c.num_heads * c.head_dim
                             + 2 * c.hidden_size * c.num_kv_heads * c.head_dim
                             + 3 * c.hidden_size * c.intermediate_size)

    methods = {}
    ours.embed_questions(questions[:2])  # compile common shapes outside the clock
    vectors = {}
    for shared in (False, True):
        name = "ours, prefix sharing" if shared else "ours, full sequences"
        ours.prefix_sharing = shared
        ours.embed_questions(questions)  # warm: compile every bucket shape
        start = time.perf_counter()
        vectors[name] = np.concatenate(ours.embed_questions(questions))
        methods[name] = (time.perf_counter() - start, prefix_tokens if shared else tokens)
    torch_seconds, torch_vectors = torch_reference(texts, batch_size)
    methods["transformers + torch"] = (torch_seconds, tokens)
    peak = matmul_peak_gflops()
    return {
        "questions": len(questions), "texts": len(texts), "tokens": tokens,
        "processed_tokens": prefix_tokens, "peak_gflops": peak,
        "methods": {name: {"texts_per_s": len(texts) / seconds,
                           "tokens_per_s": tokens / seconds,
                           "gflops": 2 * params * processed / seconds / 1e9}
                    for name, (seconds, processed) in methods.items()},
        "max_shared_vs_full": float(np.abs(vectors["ours, prefix sharing"]
                                           - vectors["ours, full sequences"]).max()),
        "max_ours_vs_torch": float(np.abs(vectors["ours, full sequences"]
                                          - np.stack(torch_vectors)).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--questions", type=int, default=48, help="684 for every question")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    r = measure(args.data_dir, args.questions, args.batch_size)
    base = r["methods"]["transformers + torch"]["texts_per_s"]
    print(f"{r['questions']} OpinionQA questions, {r['texts']} option texts, {r['tokens']} "
          f"tokens ({r['processed_tokens']} with shared header and prefixes); matmul peak here "
          f"{r['peak_gflops']:.0f} GFLOP/s")
    print(f"{'method':<24} {'texts/s':>8} {'tokens/s':>9} {'vs torch':>9} {'GFLOP/s':>8} "
          f"{'of peak':>8}")
    for name, m in r["methods"].items():
        print(f"{name:<24} {m['texts_per_s']:8.1f} {m['tokens_per_s']:9.0f} "
              f"{m['texts_per_s'] / base:8.2f}x {m['gflops']:8.1f} "
              f"{m['gflops'] / r['peak_gflops']:7.0%}")
    print(f"max |shared - full| = {r['max_shared_vs_full']:.2e}; "
          f"max |ours - torch| = {r['max_ours_vs_torch']:.2e}")


if __name__ == "__main__":
    main()
