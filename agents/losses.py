"""HiPER's actor and critic losses (spec ``hiper-method.md`` §2.3-2.5), in torch.

* :func:`token_advantages` spreads the per-turn HAE advantages over the response tokens:
  action tokens get ``a_low``, subgoal tokens ``a_high`` (segment starts only), switch tokens
  ``a_term``; every other token (whitespace, EOS, stray text) is out of the loss mask.
* :func:`ppo_policy_loss` is verl's dual-clip PPO surrogate, token-mean over the loss mask;
  :func:`actor_loss` adds the entropy bonus and the k3 KL to the reference policy.
* :func:`clipped_value_loss` is verl's clipped value loss for one head; :func:`hiper_value_loss`
  sums it over the three heads (low, high, term).

Shapes: ``B`` turns (one response each), ``L`` response tokens, ``V`` vocabulary. "Token-mean"
means the sum over masked tokens divided by the number of masked tokens (0 for an empty mask).
Masks are boolean (or 0/1) tensors. Every loss is elementwise, so per-turn ``[B]`` tensors work
wherever ``[B, L]`` ones do.

Example:
    >>> import torch
    >>> from hiper_gym.agents.losses import ppo_policy_loss
    >>> log_prob = torch.zeros(1, 3, requires_grad=True)
    >>> loss, metrics = ppo_policy_loss(
    ...     log_prob, torch.zeros(1, 3), torch.tensor([[1.0, -2.0, 5.0]]),
    ...     torch.tensor([[True, True, False]]),
    ... )
    >>> round(loss.item(), 6)  # ratio 1: -(1 - 2) / 2 tokens
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

HEADS = ("low", "high", "term")
"""The critic's value heads; their targets are ``HAEResult.r_low``, ``r_high``, ``r_term``."""

LOG_RATIO_CLAMP = 20.0
"""Log-ratios are clamped to +-20 before ``exp`` (verl), so a stale token cannot overflow."""
K3_CLAMP = 10.0
"""The k3 KL estimate is clamped to [-10, 10] (verl's ``low_var_kl``)."""


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Token-mean: sum of ``values`` where ``mask`` is set, divided by the number of set cells.

    Unmasked cells may hold anything (NaN included); they neither reach the result nor its
    gradient. An empty mask gives 0.

    Args:
        values: Any shape, e.g. ``[B, L]``.
        mask: Boolean (or 0/1) tensor broadcastable to ``values``.
        dim: Reduce over this dimension only (``None``: over everything).

    Returns:
        A scalar, or ``values`` reduced over ``dim``.
    """
    keep = mask.bool()
    total = torch.where(keep, values, torch.zeros_like(values))
    count = keep.expand_as(values)
    if dim is None:
        return total.sum() / count.sum().clamp_min(1)
    return total.sum(dim) / count.sum(dim).clamp_min(1)


def token_advantages(
    a_low: Any,
    a_high: Any,
    a_term: Any,
    segment_start: Any,
    action_mask: torch.Tensor,
    subgoal_mask: torch.Tensor,
    switch_mask: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token advantages from per-turn HAE advantages and the block masks (spec §2.3).

    ``advantages = a_low * action + a_high * (subgoal & segment_start) + a_term * switch``.
    Overlapping masks add up, as in the released code (where the action mask falls back to the
    whole response when the ``<action>`` block is missing). Subgoal tokens on KEEP turns, which
    only copy the current subgoal, get no gradient.

    Args:
        a_low: ``[B]`` low-level advantage per turn (usually ``HAEResult.a_low_norm``).
        a_high: ``[B]`` high-level advantage; NaN off segment starts is fine.
        a_term: ``[B]`` switch advantage per turn.
        segment_start: ``[B]`` bool, the turn starts a segment.
        action_mask: ``[B, L]`` tokens of ``<action>...</action>`` (tags included).
        subgoal_mask: ``[B, L]`` tokens of ``<subgoal>...</subgoal>``.
        switch_mask: ``[B, L]`` tokens of ``<switch>...</switch>``.
        dtype: Float dtype of the advantages (match the log-probs').

    Returns:
        ``(advantages [B, L], loss_mask [B, L] bool)``; advantages are 0 outside the mask.
        The per-turn inputs may be numpy or torch; outputs live on ``action_mask``'s device.
    """
    device = action_mask.device
    per_turn = [torch.as_tensor(x, device=device).to(dtype) for x in (a_low, a_high, a_term)]
    starts = torch.as_tensor(segment_start, device=device).bool()
    shapes = {tuple(m.shape) for m in (action_mask, subgoal_mask, switch_mask)}
    if len(shapes) != 1 or any(x.shape != (action_mask.shape[0],) for x in (*per_turn, starts)):
        raise ValueError(
            f"block masks must share one [B, L] shape and per-turn inputs be [B]; got masks "
            f"{sorted(shapes)} and per-turn {[tuple(x.shape) for x in (*per_turn, starts)]}"
        )
    masks = (action_mask.bool(), subgoal_mask.bool() & starts[:, None], switch_mask.bool())
    advantages = sum(
        torch.where(mask, adv[:, None], torch.zeros((), dtype=adv.dtype, device=device))
        for adv, mask in zip(per_turn, masks, strict=True)
    )
    loss_mask = masks[0] | masks[1] | masks[2]
    return advantages, loss_mask


def ppo_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    clip_eps: float = 0.2,
    dual_clip: float = 3.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate with dual clip (verl's ``vanilla`` policy loss), token-mean.

    Per token, with ``ratio = exp(log_prob - old_log_prob)``:
    ``loss = max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))``, and for ``A < 0`` also
    ``min(loss, -A * dual_clip)`` (Ye et al. 2020), which bounds the step on a token whose ratio
    has grown large while its advantage is negative.

    Args:
        log_prob: ``[B, L]`` token log-probs under the current policy (with grad).
        old_log_prob: ``[B, L]`` log-probs under the rollout policy.
        advantages: ``[B, L]`` per-token advantages (:func:`token_advantages`).
        loss_mask: ``[B, L]`` tokens that count.
        clip_eps: PPO clip range (0.2).
        dual_clip: Dual-clip constant ``c`` (3.0), must exceed 1.

    Returns:
        ``(loss, metrics)``; metrics (detached scalars): ``pg_clipfrac`` (tokens where the clipped
        term won), ``pg_clipfrac_lower`` (tokens capped by the dual clip) and ``ppo_kl`` (mean
        ``old_log_prob - log_prob``).
    """
    if dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    mask = loss_mask.bool()
    # Padding may hold -inf log-probs or NaN advantages: zero them before they meet exp or a
    # product, so that neither the loss nor its gradient sees them.
    log_ratio = torch.where(mask, log_prob - old_log_prob, torch.zeros_like(log_prob))
    log_ratio = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    adv = torch.where(mask, advantages, torch.zeros_like(advantages))
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    pg_losses = torch.maximum(unclipped, clipped)
    dual = -adv * dual_clip
    pg_losses = torch.where(adv < 0, torch.minimum(pg_losses, dual), pg_losses)
    metrics = {
        "pg_clipfrac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "pg_clipfrac_lower": masked_mean(
            ((torch.maximum(unclipped, clipped) > dual) & (adv < 0)).float(), mask
        ).detach(),
        "ppo_kl": masked_mean(-log_ratio, mask).detach(),
    }
    return masked_mean(pg_losses, mask), metrics


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Categorical entropy per position: ``logsumexp(z) - sum(softmax(z) * z)``.

    Args:
        logits: ``[..., V]`` unnormalized log-probabilities.

    Returns:
        ``[...]`` entropy in nats (e.g. ``[B, L]`` for ``[B, L, V]`` logits).
    """
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def kl_k3(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 ("low_var_kl") estimate of KL(pi || pi_ref) per token, clamped.

    ``k = ref_log_prob - log_prob`` (clamped to +-20), ``kl = exp(k) - k - 1`` (>= 0, unbiased
    for samples from ``pi``), clamped to [-10, 10] as in verl.

    Args:
        log_prob: ``[B, L]`` log-probs of the sampled tokens under the policy (with grad).
        ref_log_prob: ``[B, L]`` log-probs of the same tokens under the frozen reference.

    Returns:
        ``[B, L]`` per-token KL estimate; aggregate it with :func:`masked_mean`.
    """
    k = (ref_log_prob - log_prob).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (torch.exp(k) - k - 1.0).clamp(-K3_CLAMP, K3_CLAMP)


def actor_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    entropy: torch.Tensor | None = None,
    ref_log_prob: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    dual_clip: float = 3.0,
    entropy_coef: float = 1e-3,
    kl_coef: float = 0.01,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """HiPER's actor objective: ``pg - entropy_coef * entropy + kl_coef * k3_kl`` (spec §2.4).

    All three terms are token-means over ``loss_mask``.

    Args:
        log_prob: ``[B, L]`` current log-probs (with grad).
        old_log_prob: ``[B, L]`` rollout log-probs.
        advantages: ``[B, L]`` per-token advantages.
        loss_mask: ``[B, L]`` tokens that count.
        entropy: ``[B, L]`` token entropy (:func:`entropy_from_logits`); None skips the bonus.
        ref_log_prob: ``[B, L]`` reference log-probs; None skips the KL term.
        clip_eps: PPO clip range.
        dual_clip: Dual-clip constant.
        entropy_coef: Entropy bonus weight (authors: 1e-3).
        kl_coef: KL loss weight (authors: 0.01, ``low_var_kl``).

    Returns:
        ``(loss, metrics)`` with the metrics of :func:`ppo_policy_loss` plus ``pg_loss``,
        ``entropy`` and ``kl`` when computed.
    """
    pg_loss, metrics = ppo_policy_loss(
        log_prob, old_log_prob, advantages, loss_mask, clip_eps=clip_eps, dual_clip=dual_clip
    )
    metrics["pg_loss"] = pg_loss.detach()
    loss = pg_loss
    if entropy is not None:
        mean_entropy = masked_mean(entropy, loss_mask)
        loss = loss - entropy_coef * mean_entropy
        metrics["entropy"] = mean_entropy.detach()
    if ref_log_prob is not None:
        kl = masked_mean(kl_k3(log_prob, ref_log_prob), loss_mask)
        loss = loss + kl_coef * kl
        metrics["kl"] = kl.detach()
    return loss, metrics


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss of one head, as verl computes it.

    ``0.5 * token-mean(max((v - R)^2, (clip(v, v_old - c, v_old + c) - R)^2))``. The 0.5 factor
    is verl's (``compute_value_loss``); the spec's §2.5 formula omits it.

    Args:
        values: Predictions of one head (with grad), ``[B]`` per turn or ``[B, L]`` per token.
        old_values: Same positions, predicted at rollout time.
        returns: Targets (``HAEResult.r_low``/``r_high``/``r_term``); NaN outside ``mask`` is
            fine (``r_high`` off segment starts).
        mask: Cells that carry a value for this head (one per turn, or per segment start).
        clip: Value clip range (authors: 0.5).

    Returns:
        ``(loss, metrics)``; metrics: ``vf_clipfrac`` (cells where the clipped term won) and
        ``vpred_mean``.
    """
    keep = mask.bool()
    target = torch.where(keep, returns, torch.zeros_like(returns))
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_error = (values - target) ** 2
    clipped_error = (clipped_values - target) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), keep)
    metrics = {
        "vf_clipfrac": masked_mean((clipped_error > unclipped_error).float(), keep).detach(),
        "vpred_mean": masked_mean(values, keep).detach(),
    }
    return loss, metrics


def hiper_value_loss(
    values: Mapping[str, torch.Tensor],
    old_values: Mapping[str, torch.Tensor],
    returns: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    *,
    clip: float = 0.5,
    high_coef: float = 1.0,
    term_coef: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The three-head critic loss ``L_V = VL_low + high_coef VL_high + term_coef VL_term`` (§2.5).

    Args:
        values: Per head (``"low"``, ``"high"``, ``"term"``), the predictions with grad.
        old_values: Per head, the rollout-time predictions.
        returns: Per head, the HAE targets ``r_low``, ``r_high``, ``r_term``.
        masks: Per head, where a target exists: every turn for low and term, segment starts
            for high.
        clip: Value clip range.
        high_coef: Weight of the high head (authors: 1.0).
        term_coef: Weight of the term head (authors: 1.0).

    Returns:
        ``(loss, metrics)`` with ``vf_loss_<head>``, ``vf_clipfrac_<head>`` and
        ``vpred_mean_<head>`` per head.
    """
    missing = [h for h in HEADS if not all(h in m for m in (values, old_values, returns, masks))]
    if missing:
        raise ValueError(f"hiper_value_loss needs every head in {HEADS}; missing {missing}")
    weights = {"low": 1.0, "high": high_coef, "term": term_coef}
    losses, metrics = {}, {}
    for head in HEADS:
        losses[head], head_metrics = clipped_value_loss(
            values[head], old_values[head], returns[head], masks[head], clip=clip
        )
        metrics[f"vf_loss_{head}"] = losses[head].detach()
        metrics.update({f"{name}_{head}": value for name, value in head_metrics.items()})
    return sum(weights[head] * losses[head] for head in HEADS), metrics
