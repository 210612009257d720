"""A fourth head costs one module: a tiny head defined here, registered by name, trains,
saves, reloads and adapts through the public API with no other file touched."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gpo
from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.evaluation.evaluate import evaluate_run
from gpo.models import head_class
from gpo.models.common import softmax_within_questions
from gpo.training import train


@dataclasses.dataclass(frozen=True)
class ContextMeanConfig:
    embedding_dim: int
    width: int = 8

    @classmethod
    def paper(cls, embedding_dim: int) -> ContextMeanConfig:
        return cls(embedding_dim=embedding_dim)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MeanState:
    summary_BxD: jax.Array


@gpo.register_head("context_mean_test")
class ContextMean(gpo.Head):
    """Scores a target by its projected embedding against the probability-weighted mean of
    the context's projected embeddings."""

    config_class = ContextMeanConfig

    def __init__(self, config: ContextMeanConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.project = nnx.Linear(config.embedding_dim, config.width, rngs=rngs)

    def encode_context(self, context: gpo.Points) -> MeanState:
        weight = jnp.where(context.mask_BxN, context.prob_BxN, 0.0)[..., None]
        summary = (self.project(context.x_BxNxE) * weight).sum(1)
        return MeanState(summary / jnp.maximum(weight.sum(1), 1e-6))

    def predict(self, group: MeanState, targets: gpo.Points):
        logits = jnp.einsum("btd,bd->bt", self.project(targets.x_BxNxE), group.summary_BxD)
        prob = softmax_within_questions(logits, targets.question_BxN, targets.mask_BxN)
        return prob, jnp.full(prob.shape, 0.1)

    def describe_group(self, group: MeanState):
        return {"summary": group.summary_BxD}


def test_a_new_head_trains_and_adapts_through_the_public_api(tiny, tmp_path):
    assert head_class("context_mean_test") is ContextMean
    survey, embeddings = tiny
    config = RunConfig(head="context_mean_test", data=DataConfig(eval_k=5),
                       embed=EmbedConfig(model="lexical", dim=32),
                       train=TrainConfig.of(steps=30, batch_size=4, context_range=(2, 6),
                                            target_range=(2, 6), eval_every=10,
                                            checkpoint_every=10, learning_rate=1e-2,
                                            loss="kl"))
    result = train(config, survey, embeddings, tmp_path / "run", progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    model = gpo.load(tmp_path / "run")
    assert model.head_config == ContextMeanConfig(embedding_dim=32)  # the data's width
    q0, q1 = survey.questions[:2]
    group = model.adapt([(q0.key, survey.probs_GxQxO[0, 0, :len(q0.answer_options)])])
    assert group.features["summary"].shape == (8,)
    prediction = group.predict([q1.key])[0]
    np.testing.assert_allclose(prediction.probs.sum(), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="no group space"):
        group.interpolate(group, 0.5)
    evaluation = evaluate_run(tmp_path / "run", survey, (5,))
    assert evaluation.head == "CONTEXT_MEAN_TEST" and evaluation.per_split(
        "CONTEXT_MEAN_TEST", 5)[0] > 0.5


def test_heads_register_once_by_name():
    with pytest.raises(ValueError, match="already registered"):
        gpo.register_head("gpo")(ContextMean)
    with pytest.raises(TypeError, match="must subclass"):
        gpo.register_head("not_a_head")(object)
    with pytest.raises(ValueError, match="unknown head 'bert'"):
        head_class("bert")
