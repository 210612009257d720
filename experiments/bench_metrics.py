"""Time the alignment metric at OpinionQA's size (36 groups x 620 questions, up to 9 options).

    python experiments/bench_metrics.py
"""

from __future__ import annotations

import time

import numpy as np

from gpo.evaluation.metrics import alignment, js_alignment


def measure(repeats: int = 20) -> dict[str, float]:
    """Milliseconds per call of each metric on OpinionQA-sized random predictions."""
    rng = np.random.default_rng(0)
    G, Q, O = 36, 620, 9
    pred = rng.dirichlet(np.ones(O), size=(G, Q))
    true = rng.dirichlet(np.ones(O), size=(G, Q))
    ordinals = np.tile(np.arange(O, dtype=float), (Q, 1))
    mask, scored = np.ones((Q, O), bool), np.ones((G, Q), bool)
    out = {}
    for name, fn in (("alignment (W1)", lambda: alignment(pred, true, ordinals, mask, scored)),
                     ("JS alignment", lambda: js_alignment(pred, true, mask, scored))):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[name] = 1e3 * (time.perf_counter() - start) / repeats
    return out


def main() -> None:
    for name, ms in measure().items():
        print(f"{name}: {ms:.1f} ms per 36 groups x 620 questions")


if __name__ == "__main__":
    main()
