"""Evaluate a trained head on unseen groups: adapt to each group's context questions, predict
its target questions, score with the dataset's alignment metric.

Shapes: G groups, Q questions, O options, B groups per forward pass, T target points.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from gpo.baselines import score_predictions
from gpo.data.episodes import EvalTask, pack_episodes, padded_size
from gpo.data.survey import Survey
from gpo.metrics import Score
from gpo.models.common import forward_episodes


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, table_NxE, batch):
    return forward_episodes(nnx.merge(graphdef, state), table_NxE, batch)


def predict_task(model, table_NxE: np.ndarray, survey: Survey, task: EvalTask,
                 groups_per_pass: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(probability, std) `[G, Q, O]` for the task's groups on their target questions."""
    graphdef, state = nnx.split(model)
    G, Q, O = len(task.groups), len(survey.questions), survey.max_options
    prob_GxQxO, std_GxQxO = np.zeros((G, Q, O), np.float32), np.zeros((G, Q, O), np.float32)
    n_options = survey.n_options_Q
    context_capacity = padded_size(max(n_options[row].sum() for row in task.context_GxQ))
    target_capacity = padded_size(max(n_options[row].sum() for row in task.target_GxQ))
    for start in range(0, G, groups_per_pass):
        rows = np.arange(start, min(start + groups_per_pass, G))
        padded = np.resize(rows, groups_per_pass)  # fixed batch shape; extras are repeats
        batch = pack_episodes(survey, task.groups[padded],
                              [np.flatnonzero(task.context_GxQ[r]) for r in padded],
                              [np.flatnonzero(task.target_GxQ[r]) for r in padded],
                              context_capacity, target_capacity)
        prob_BxT, std_BxT = jax.device_get(_forward(graphdef, state, table_NxE, batch.arrays()))
        for b, row in enumerate(rows):
            mask = batch.target_mask_BxT[b]
            option = batch.target_option_BxT[b][mask]
            prob_GxQxO[row, option // O, option % O] = prob_BxT[b][mask]
            std_GxQxO[row, option // O, option % O] = std_BxT[b][mask]
    return prob_GxQxO, std_GxQxO


def evaluate_groups(model, table_NxE: np.ndarray, survey: Survey, task: EvalTask,
                    metric: str = "wasserstein") -> Score:
    prob, _ = predict_task(model, table_NxE, survey, task)
    return score_predictions(survey, task, prob, metric)

