"""Baselines every model must beat, all adapting to an unseen group from its context answers.

Each baseline maps (survey, split, eval task) to predictions `[G', Q, O]` for the task's groups
over every question (only targets are scored). Shapes: G' test groups, S training groups,
Q questions, O options.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gpo.data.splits import EvalTask, Split, make_eval_task, make_split
from gpo.data.survey import Survey
from gpo.evaluation.metrics import metric_function, score_predictions

_EPS = 1e-6


def _uniform_QxO(survey: Survey) -> np.ndarray:
    mask = survey.option_mask_QxO.astype(np.float64)
    return mask / mask.sum(1, keepdims=True)


def uniform(survey: Survey, split: Split, task: EvalTask, **_) -> np.ndarray:
    u = _uniform_QxO(survey)
    return np.broadcast_to(u, (len(task.groups), *u.shape)).copy()


def population_prior(survey: Survey, split: Split, task: EvalTask, **_) -> np.ndarray:
    """Per question, the mean distribution of the training groups that answered it.

    Under protocol B this reads training groups' answers on held-out questions (answers no
    training episode used), so it is a reference point there rather than a fair competitor.
    """
    prior = _prior_QxO(survey, split)
    return np.broadcast_to(prior, (len(task.groups), *prior.shape)).copy()


def _prior_QxO(survey: Survey, split: Split) -> np.ndarray:
    probs = survey.probs_GxQxO[split.train_groups].astype(np.float64)
    answered = survey.answered_GxQ[split.train_groups]
    total = (probs * answered[..., None]).sum(0)
    n = answered.sum(0)[:, None]
    return np.where(n > 0, total / np.maximum(n, 1), _uniform_QxO(survey))


def _train_components_SxQxO(survey: Survey, split: Split) -> np.ndarray:
    """Training groups' distributions, with unanswered questions filled by the prior."""
    probs = survey.probs_GxQxO[split.train_groups].astype(np.float64)
    answered = survey.answered_GxQ[split.train_groups][..., None]
    return np.where(answered, probs, _prior_QxO(survey, split)[None])


def nearest_group(survey: Survey, split: Split, task: EvalTask, metric: str = "wasserstein",
                  **_) -> np.ndarray:
    """The training group that agrees best with the test group on its context questions."""
    comps = _train_components_SxQxO(survey, split)
    S = len(split.train_groups)
    scores_GxS = np.zeros((len(task.groups), S))
    for s in range(S):
        pred = np.broadcast_to(comps[s], (len(task.groups), *comps.shape[1:]))
        pair = metric_function(metric)(survey, pred, survey.probs_GxQxO[task.groups],
                               task.context_GxQ).per_pair_GxQ
        scored = task.context_GxQ & np.isfinite(pair)
        scores_GxS[:, s] = np.where(scored, pair, 0.0).sum(1) / np.maximum(scored.sum(1), 1)
    best = scores_GxS.argmax(1)
    return comps[best]


def group_mixture(survey: Survey, split: Split, task: EvalTask, n_iter: int = 300,
                  **_) -> np.ndarray:
    """A convex mixture of training groups fitted to the context answers.

    Weights maximise the context log-likelihood sum_q sum_o p(o) log sum_s w_s p_s(o), a concave
    problem on the simplex, solved by EM (each step provably does not decrease it).
    """
    comps = _train_components_SxQxO(survey, split)
    S = comps.shape[0]
    out = np.zeros((len(task.groups), *comps.shape[1:]))
    for row, g in enumerate(task.groups):
        ctx = np.flatnonzero(task.context_GxQ[row])
        if len(ctx) == 0:
            out[row] = comps.mean(0)
            continue
        true_N = survey.probs_GxQxO[g, ctx].reshape(-1)
        comp_SxN = comps[:, ctx].reshape(S, -1) + _EPS
        keep = true_N > 0
        true_N, comp_SxN = true_N[keep], comp_SxN[:, keep]
        w = np.full(S, 1.0 / S)
        for _ in range(n_iter):
            mix_N = w @ comp_SxN
            w = w * (comp_SxN @ (true_N / mix_N)) / true_N.sum()
        out[row] = np.einsum("s,sqo->qo", w, comps)
    return out


RIDGE_PENALTIES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def group_regression(survey: Survey, split: Split, task: EvalTask, metric: str = "wasserstein",
                     penalty: float | None = None, **_) -> np.ndarray:
    """An affine combination of training groups fitted to the context answers.

    Unlike the group mixture, weights may be negative (they still sum to 1), so a prediction
    can leave the training groups' convex hull: a group more extreme than any training group
    is reachable. Ridge regression toward equal weights on the context probabilities; the
    penalty (unless given) is picked by leave-one-out over the training groups, each predicted
    from the others with the same context questions, so nothing beyond the test group's
    context is read.
    """
    comps = _train_components_SxQxO(survey, split)
    mask = survey.option_mask_QxO
    out = np.zeros((len(task.groups), *comps.shape[1:]))
    penalties: dict[bytes, float] = {}  # one choice per distinct set of context questions
    for row, g in enumerate(task.groups):
        context_Q = task.context_GxQ[row]
        if not context_Q.any():
            out[row] = comps.mean(0)
            continue
        key = context_Q.tobytes()
        if key not in penalties:
            penalties[key] = penalty if penalty is not None else _leave_one_group_out_penalty(
                survey, split, comps, context_Q, metric)
        points = context_Q[:, None] & mask
        w = _affine_weights(comps[:, points], survey.probs_GxQxO[g][points], penalties[key])
        out[row] = _affine_prediction(w, comps, mask)
    return out


def _affine_weights(comp_SxN: np.ndarray, true_N: np.ndarray, penalty: float) -> np.ndarray:
    """argmin_w |w A - y|^2 + penalty |w - 1/S|^2 subject to sum(w) = 1, in closed form."""
    S = comp_SxN.shape[0]
    gram = comp_SxN @ comp_SxN.T + penalty * np.eye(S)
    free = np.linalg.solve(gram, comp_SxN @ true_N + penalty / S)
    ones = np.linalg.solve(gram, np.ones(S))
    return free + ones * (1 - free.sum()) / ones.sum()  # Lagrange step onto sum(w) = 1


def _affine_prediction(w_S: np.ndarray, comps_SxQxO: np.ndarray, mask_QxO: np.ndarray
                       ) -> np.ndarray:
    """The weighted groups, clipped at a small floor and renormalised into distributions."""
    pred = np.where(mask_QxO, np.maximum(np.einsum("s,sqo->qo", w_S, comps_SxQxO), 1e-4), 0.0)
    return pred / pred.sum(1, keepdims=True)


def _leave_one_group_out_penalty(survey: Survey, split: Split, comps_SxQxO: np.ndarray,
                                 context_Q: np.ndarray, metric: str) -> float:
    """The ridge penalty under which training groups are best predicted from the others."""
    mask = survey.option_mask_QxO
    answered_SxQ = survey.answered_GxQ[split.train_groups]
    scores = np.zeros(len(RIDGE_PENALTIES))
    for s, g in enumerate(split.train_groups):
        points = (context_Q & answered_SxQ[s])[:, None] & mask
        held_out_Q = answered_SxQ[s] & ~context_Q
        if not points.any() or not held_out_Q.any():
            continue
        others = np.delete(comps_SxQxO, s, axis=0)
        for i, penalty in enumerate(RIDGE_PENALTIES):
            w = _affine_weights(others[:, points], survey.probs_GxQxO[g][points], penalty)
            pred = _affine_prediction(w, others, mask)
            scores[i] += metric_function(metric)(survey, pred[None], survey.probs_GxQxO[g][None],
                                         held_out_Q[None]).mean
    return RIDGE_PENALTIES[int(scores.argmax())]


def knn_options(survey: Survey, split: Split, task: EvalTask, option_embeddings_QxOxE=None,
                k: int = 10, **_) -> np.ndarray:
    """The test group's own context answers, transferred to targets by embedding similarity.

    Each target option scores the similarity-weighted mean of its k nearest context options'
    preference relative to uniform (probability x number of options, so 2- and 5-option
    questions compare), then scores are renormalised within the question. Uses no training
    group, so it is fair under protocol B.
    """
    if option_embeddings_QxOxE is None:
        raise ValueError("knn_options needs option_embeddings_QxOxE (see gpo.embed)")
    emb = np.asarray(option_embeddings_QxOxE, np.float64)
    Q, O = survey.option_mask_QxO.shape
    if emb.shape[:2] != (Q, O):
        raise ValueError(f"option embeddings have shape {emb.shape}, expected ({Q}, {O}, E)")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), _EPS)
    flat = emb.reshape(Q * O, -1)
    valid = survey.option_mask_QxO.reshape(-1)
    relative = (survey.probs_GxQxO * survey.n_options_Q[None, :, None]).reshape(len(
        survey.groups), -1)
    out = uniform(survey, split, task)
    for row, g in enumerate(task.groups):
        ctx_points = np.flatnonzero(np.repeat(task.context_GxQ[row], O) & valid)
        if len(ctx_points) == 0:
            continue
        sim_PxC = flat @ flat[ctx_points].T
        kk = min(k, len(ctx_points))
        top = np.argpartition(-sim_PxC, kk - 1, axis=1)[:, :kk]
        sim = np.take_along_axis(sim_PxC, top, 1)
        weights = np.exp(sim / 0.1)
        score = (weights * relative[g, ctx_points][top]).sum(1) / weights.sum(1)
        score = np.where(valid, np.maximum(score, _EPS), 0.0).reshape(Q, O)
        out[row] = score / score.sum(1, keepdims=True)
    return out


# Baselines that use only the test group's own answers and the survey's texts. The others read
# training groups' answers on the target questions, which protocol B holds out from training.
USES_ONLY_CONTEXT = frozenset({"uniform", "kNN options"})

BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "uniform": uniform,
    "population prior": population_prior,
    "nearest group": nearest_group,
    "group mixture": group_mixture,
    "group regression": group_regression,
    "kNN options": knn_options,
}


def run_baselines(survey: Survey, protocol: str, seeds: tuple[int, ...] = (0, 1, 2), k: int = 20,
                  metric: str = "wasserstein", option_embeddings_QxOxE=None,
                  train_fraction: float = 0.4) -> dict[str, list[float]]:
    """Every applicable baseline's score on each seed's split: {baseline: [score per seed]}."""
    results: dict[str, list[float]] = {}
    for seed in seeds:
        split = make_split(survey, protocol, seed=seed, train_fraction=train_fraction)
        task = make_eval_task(survey, split, k, seed=seed)
        for name, predict in BASELINES.items():
            if name == "kNN options" and option_embeddings_QxOxE is None:
                continue
            pred = predict(survey, split, task, metric=metric,
                           option_embeddings_QxOxE=option_embeddings_QxOxE)
            results.setdefault(name, []).append(score_predictions(survey, task, pred, metric).mean)
    return results
