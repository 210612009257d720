"""Training losses by name (`gpo.config.LOSSES`): each a sum over an episode's target
points, averaged over episodes (rows may pack several, `gpo.training.packing`).

Shapes: B rows, T target points.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gpo.models.common import same_question_BxTxT


def episode_loss(loss_name: str, prob_BxT, std_BxT, targets, episodes: int | None = None
                 ) -> jax.Array:
    """The training loss, averaged over `episodes` (by default one a row; packed rows hold
    several). 'X+nll' trains the probabilities with X and, separately, the predicted std with
    the Gaussian NLL of the (fixed) probabilities: each part of the output learns from the loss
    that fits it."""
    # Every loss is a mean over rows of per-row sums: rescaled, a mean over episodes.
    per_episode = 1.0 if episodes is None else prob_BxT.shape[0] / episodes
    return _row_mean_loss(loss_name, prob_BxT, std_BxT, targets) * per_episode


def _row_mean_loss(loss_name: str, prob_BxT, std_BxT, targets) -> jax.Array:
    true, mask = targets.prob_BxN, targets.mask_BxN
    if loss_name.endswith("+nll"):
        std_loss = gaussian_nll(jax.lax.stop_gradient(prob_BxT), std_BxT, true, mask)
        return _row_mean_loss(loss_name[:-len("+nll")], prob_BxT, std_BxT, targets) + std_loss
    if loss_name == "gaussian_nll":
        return gaussian_nll(prob_BxT, std_BxT, true, mask)
    if loss_name == "wasserstein":
        return wasserstein(prob_BxT, true, targets.question_BxN, mask, targets.ordinal_BxN,
                           targets.gap_BxN, targets.episode_BxN)
    return cross_entropy(prob_BxT, true, mask)


def gaussian_nll(prob_BxT, std_BxT, true_BxT, mask_BxT) -> jax.Array:
    """GPO's loss: -log N(true; predicted probability, std), summed over an episode's target
    points, averaged over episodes."""
    z = (true_BxT - prob_BxT) / std_BxT
    nll = 0.5 * z**2 + jnp.log(std_BxT) + 0.5 * jnp.log(2 * jnp.pi)
    return jnp.mean(jnp.sum(jnp.where(mask_BxT, nll, 0.0), axis=-1))


def cross_entropy(prob_BxT, true_BxT, mask_BxT) -> jax.Array:
    """KL(true || predicted) summed over an episode's questions, averaged over episodes.

    (Cross-entropy minus the target's entropy, so a perfect prediction scores 0.)"""
    true = jnp.where(mask_BxT, true_BxT, 0.0)
    kl = true * (jnp.log(jnp.maximum(true, 1e-12)) - jnp.log(jnp.maximum(prob_BxT, 1e-12)))
    return jnp.mean(jnp.sum(jnp.where(mask_BxT, kl, 0.0), axis=-1))


def wasserstein(prob_BxT, true_BxT, question_BxT, mask_BxT, ordinal_BxT, gap_BxT,
                episode_BxT=None) -> jax.Array:
    """The alignment metric's distance as a loss: per question, the integral of
    |CDF_pred - CDF_true| over its ordinal scale (scaled to [0, 1]), summed over an episode's
    questions, averaged over episodes. Nominal questions (no scale) have zero gaps: no loss."""
    same = same_question_BxTxT(question_BxT, mask_BxT, episode_BxT)
    at_or_below = same & (ordinal_BxT[:, None, :] <= ordinal_BxT[:, :, None])
    diff_BxT = jnp.where(mask_BxT, prob_BxT - true_BxT, 0.0)
    cdf_BxT = jnp.einsum("bts,bs->bt", at_or_below.astype(diff_BxT.dtype), diff_BxT)
    return jnp.mean(jnp.sum(jnp.where(mask_BxT, jnp.abs(cdf_BxT) * gap_BxT, 0.0), axis=-1))
