"""Meta-training episodes sampled on the host (NumPy), reproducible from (seed, step), and what
both samplers share: the checks of a sampling config against the data, and the episode
capacities. The distribution is `gpo.config.SamplingConfig`'s.

Shapes: B episodes, Q questions, O options, S reference groups.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gpo.config import SamplingConfig
from gpo.data.survey import Survey
from gpo.points import EpisodeBatch, pack_episodes, padded_size, point_capacity, reference_mask


def check_episodes(survey: Survey, groups: np.ndarray, questions: np.ndarray,
                   sampling: SamplingConfig) -> None:
    """Refuse a sampling config the data cannot serve, naming the culprit."""
    if sampling.group_mixup and sampling.mixup_groups > len(groups):
        raise ValueError(f"train.sampling.mixup_groups must be in [2, {len(groups)}] (the "
                         f"meta-training groups), got {sampling.mixup_groups}")
    answered = survey.answered_GxQ[np.ix_(groups, questions)].sum(1)
    if answered.min() < 2:
        bad = survey.group_labels[groups[answered.argmin()]]
        raise ValueError(f"group {bad!r} answered fewer than 2 of the episode questions")


def episode_capacities(survey: Survey, questions: np.ndarray, sampling: SamplingConfig
                       ) -> tuple[int, int]:
    """(context, target) points the largest episode the ranges allow can have."""
    n_max = min(sampling.context_range[1] + sampling.target_range[1], len(questions))
    return (point_capacity(survey, questions, min(sampling.context_range[1], n_max)),
            point_capacity(survey, questions, min(sampling.target_range[1], n_max)))


@dataclasses.dataclass
class EpisodeSampler:
    """Random training episodes over `groups` x `questions`, reproducible from (seed, step).

    A batch is padded to its own largest episode (rounded up to `padded_size`), not to the
    worst case the ranges allow: with many-option questions that worst case is several times
    the typical episode, and every padded point costs as much compute as a real one.

    Group mixup earns its keep where training groups are few (OpinionQA protocol A trains on
    ~10 of 36): the model otherwise meets the same handful of groups over and over; mixes fill
    the space between them, where many unseen groups lie.
    """

    survey: Survey
    groups: np.ndarray
    questions: np.ndarray
    sampling: SamplingConfig = SamplingConfig()
    seed: int = 0
    reference_groups: np.ndarray | None = None  # the option table's reference columns
    usable_references: np.ndarray | None = None  # bool per column (default: all)

    def __post_init__(self):
        self.groups = np.asarray(self.groups, int)
        self.questions = np.asarray(self.questions, int)
        if self.reference_groups is None:
            self.reference_groups = np.zeros(0, int)
        if self.usable_references is None:
            self.usable_references = np.ones(len(self.reference_groups), bool)
        check_episodes(self.survey, self.groups, self.questions, self.sampling)
        self.context_capacity, self.target_capacity = episode_capacities(
            self.survey, self.questions, self.sampling)

    def sample(self, step: int) -> EpisodeBatch:
        s = self.sampling
        rng = np.random.default_rng((self.seed, step))
        groups = rng.choice(self.groups, size=s.batch_size)
        probs_BxQxO = self.survey.probs_GxQxO[groups]
        respondents_BxQ = self.survey.respondents_GxQ[groups]
        contexts, targets, members_B = [], [], [[g] for g in groups]
        for b, g in enumerate(groups):
            answered_Q = self.survey.answered_GxQ[g, self.questions]
            if s.group_mixup and rng.random() < s.group_mixup:
                members = rng.choice(self.groups, size=s.mixup_groups, replace=False)
                weights = rng.dirichlet(np.ones(len(members)))
                shared_Q = self.survey.answered_GxQ[np.ix_(members, self.questions)].all(0)
                if shared_Q.sum() >= 2:  # sparse surveys: members may share too few questions
                    groups[b] = g = members[weights.argmax()]  # names the episode in errors
                    members_B[b] = list(members)
                    respondents_BxQ[b] = np.nan  # a mix has no respondents of its own
                    probs_BxQxO[b] = np.einsum("m,mqo->qo", weights,
                                               self.survey.probs_GxQxO[members])
                    answered_Q = shared_Q
            mine = self.questions[answered_Q]
            n_c = self._context_size(rng)
            n_t = int(rng.integers(s.target_range[0], s.target_range[1] + 1))
            n_c = min(n_c, len(mine) - 1)
            n_t = min(n_t, len(mine) - n_c)
            chosen = rng.choice(mine, size=n_c + n_t, replace=False)
            contexts.append(chosen[:n_c])
            targets.append(chosen[n_c:])
        points = self.survey.n_options_Q
        context_capacity = min(self.context_capacity,
                               padded_size(max(points[c].sum() for c in contexts)))
        target_capacity = min(self.target_capacity,
                              padded_size(max(points[t].sum() for t in targets)))
        references = reference_mask(self.reference_groups, self.usable_references, members_B)
        # drawn last, each only where asked for: without hiding, the stream is unchanged
        hidden = rng.random(s.batch_size) < s.hide_references if s.hide_references else None
        if s.hide_respondents:
            respondents_BxQ[rng.random(s.batch_size) < s.hide_respondents] = np.nan
        return pack_episodes(self.survey, groups, contexts, targets, context_capacity,
                             target_capacity, references, probs_BxQxO, respondents_BxQ, hidden)

    def _context_size(self, rng: np.random.Generator) -> int:
        low, high = self.sampling.context_range
        if self.sampling.context_distribution == "uniform":
            return int(rng.integers(low, high + 1))
        # Log-uniform: as many episodes with 1-10 context questions as with 10-100, so a head
        # learns the few-answer regime as well as the many-answer one.
        return int(np.floor(np.exp(rng.uniform(np.log(low), np.log(high + 1)))))
