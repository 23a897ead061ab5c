"""HiPER: hierarchical PPO with Hierarchical Advantage Estimation for LLM agents.

Peng et al. 2026, "HiPER: Hierarchical Reinforcement Learning with Explicit Credit Assignment for
Large Language Model Agents", arXiv 2602.16165. Method spec: ``specs/hiper-method.md``.

One LLM policy writes, every turn, ``<switch>KEEP|SWITCH</switch><subgoal>...</subgoal>
<action>...</action>``. What HiPER adds to the shared trainer (:mod:`hiper_gym.agents.trainer`):

* **Three value heads** (§2.2): V_high and V_term read at the last prompt token, V_low right
  after ``</subgoal>`` (:meth:`HiPER.read_values`).
* **HAE** (:mod:`hiper_gym.agents.hae`): per-turn A_low (actions), A_high (subgoals at segment
  starts), A_term (switch tokens), standardized separately; critic targets R_low/R_high/R_term.
* **Block masks** (§2.3): each advantage trains only its own block's tokens
  (:func:`hiper_gym.agents.losses.token_advantages`).
* **The three-head value loss** (§2.5).

Run ``hiper-gym train`` (the ``tiny-cpu`` preset: a small random-init Qwen2 on the embedded
ALFWorld games, on the CPU) or ``hiper-gym train hiper paper --model Qwen/Qwen2.5-1.5B-Instruct
--device cuda`` (the authors' settings). ``hiper-gym train hiper --help`` lists every flag.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from hiper_gym.agents import hae, losses, trainer
from hiper_gym.agents.models import VALUE_HIGH, VALUE_LOW, VALUE_TERM
from hiper_gym.agents.policy import TurnBatch
from hiper_gym.agents.rollout import Rollout, Turn


@dataclass
class Args(trainer.TrainArgs):
    """HiPER's settings. Defaults are the authors' (hiper-method.md §2.4, §2.5, §4, §6)."""

    exp_name: str = "hiper"
    """name of the experiment (first part of the run name)"""
    high_value_coef: float = 1.0
    """weight of the high-head value loss"""
    term_value_coef: float = 1.0
    """weight of the term-head value loss"""

    # --- HAE (hiper_gym.agents.hae.HAEConfig) ---
    gamma: float = 1.0
    """per-turn discount"""
    lam_turn: float = 1.0
    """GAE lambda inside a segment"""
    lam_seg: float = 0.95
    """GAE lambda across segments"""
    norm_adv: bool = True
    """standardize each advantage over the batch"""
    bootstrap_truncated: bool = True
    """bootstrap truncated episodes (ALFWorld True, WebShop False)"""
    keep_penalty: float = -0.3
    """reward shaping on KEEP turns (ALFWorld -0.3, WebShop -3.5)"""
    keep_penalty_mode: Literal["normalized", "fixed"] = "normalized"
    """``normalized``: keep_penalty / T per KEEP turn"""
    invalid_action_penalty_coef: float = 0.1
    """penalty of a format-invalid turn"""
    keep_consistency_penalty: float = -0.3
    """penalty of a KEEP turn whose subgoal differs from the previous one"""
    switch_advantage: Literal["released", "paper"] = "released"
    """``released``: G_t - V_term (the authors' code); ``paper``: (q - beta)(V_high - V_low)"""


def tiny_cpu_preset() -> Args:
    """The default of ``hiper-gym train``: a cloned base policy, then HiPER, on 2 CPU cores.

    The shared CPU changes are :func:`~hiper_gym.agents.trainer.tiny_cpu_settings`. HiPER's own,
    each measured (README, "Training"):

    * ``base_policy="auto"``: the run first behaviour-clones the random-init model on the expert
      plans of the 36 training games (``hiper-gym sft``), whose subgoals come from the plan, as
      the paper starts from an instruct model that can act. From scratch the tiny model's
      subgoals were noise words and it reached 0.3 on the training games in 19 minutes; a base
      of 200 steps starts at 0.83 there and 0.35 on the held-out games.
    * ``base_rename_copies=3``, ``base_sft_steps=800`` (about 2 minutes): the base also clones
      three renamed copies of every episode (``hiper-gym sft --rename-copies``), because half
      the held-out goals name objects no training game has; it starts at 0.96 / 0.43, and the
      default run ended at 0.54 held-out against 0.47 with the plain base (one seed each).
    * ``learning_rate=1e-4``, ``kl_coef=0.05`` (k3 KL to the base): at the from-scratch 2e-3
      and no KL the first updates wiped the base out (training success 0.84 -> 0.45 in five
      iterations); at 3e-4 and 0.01 both training and held-out success eroded after 40
      iterations (held-out 0.29 at 60); at 1e-4 and 0.05 held-out success rose from the base's
      0.35 to 0.52 in 40 iterations (one seed, 48 episodes: +-0.14).
    * ``max_subgoal_tokens=8``: the demonstrations' subgoals fit, so the base's subgoals are not
      cut by the grammar.
    * ``bootstrap_truncated=False`` (authors True for ALFWorld): the episode really ends at the
      turn limit, and bootstrapping a truncated episode from its own last value let every
      value drift down with the shaping penalties (to about -7 in 40 iterations).
    * ``keep_penalty=0`` (authors -0.3): under constrained decoding a KEEP copies the subgoal
      exactly; the penalty drove a from-scratch model to SWITCH every turn.
    * ``num_iterations=110``: the base and 110 iterations took 8.7 of the 20 minutes on 2 cores
      (held-out 0.54, training games 0.97).

    Everything else (HAE lambdas and gamma, clipping, entropy) is the authors'.
    """
    return dataclasses.replace(
        Args(),
        exp_name="hiper-tiny",
        **{
            **trainer.tiny_cpu_settings(),
            "base_policy": "auto",
            "base_rename_copies": 3,
            "base_sft_steps": 800,
            "learning_rate": 1e-4,
            "kl_coef": 0.05,
            "max_subgoal_tokens": 8,
            "num_iterations": 110,
        },
        bootstrap_truncated=False,
        keep_penalty=0.0,
    )


class HiPER(trainer.Algorithm):
    """Hierarchical PPO: three value heads, HAE, block-masked policy loss."""

    name = "hiper"
    args_class = Args
    presets = {
        "tiny-cpu": (
            "small random-init Qwen2 on the embedded ALFWorld games, CPU",
            tiny_cpu_preset,
        ),
        "paper": ("the authors' settings (Qwen2.5-1.5B-Instruct, GPU)", Args),
    }
    value_heads = 3
    metric_columns = [
        "losses/vf_loss_low",
        "losses/vf_loss_high",
        "losses/vf_loss_term",
        "values/v_low",
        "values/v_high",
        "values/v_term",
    ]
    args: Args

    def validate(self) -> list[str]:
        """Discounts and lambdas in [0, 1]."""
        return trainer.check_unit_interval(self.args, ("gamma", "lam_turn", "lam_seg"))

    def read_values(self, per_token_values: torch.Tensor, batch: TurnBatch) -> torch.Tensor:
        """``[B, 3]`` (low, high, term) read as the authors do (§2.2).

        High and term at the last prompt token; low right after ``</subgoal>`` (at its last
        token; at the last prompt token when the response has none).
        """
        rows = torch.arange(per_token_values.shape[0], device=per_token_values.device)
        last_prompt = batch.prompt_length - 1
        low_column = batch.prompt_length + batch.low_value_index
        values = torch.stack(
            [
                per_token_values[rows, low_column, VALUE_LOW],
                per_token_values[rows, last_prompt, VALUE_HIGH],
                per_token_values[rows, last_prompt, VALUE_TERM],
            ],
            dim=-1,
        )
        return values.float()

    def targets(self, rollout: Rollout, values: torch.Tensor | None) -> trainer.Targets:
        """HAE over the batch (§2.2), spread onto the block tokens (§2.3); 3-head targets."""
        assert values is not None
        result = run_hae(self.args, rollout.turns, values)
        return block_targets(rollout.turns, result, values)

    def value_loss(
        self,
        values: torch.Tensor,
        old_values: torch.Tensor,
        returns: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``VL_low + high_coef VL_high + term_coef VL_term`` (§2.5)."""
        per_head = (
            {head: tensor[:, column] for column, head in enumerate(losses.HEADS)}
            for tensor in (values, old_values, returns, mask)
        )
        return losses.hiper_value_loss(
            *per_head,
            clip=self.args.vf_clip,
            high_coef=self.args.high_value_coef,
            term_coef=self.args.term_value_coef,
        )


def hae_config(args: Args) -> hae.HAEConfig:
    """The HAE settings of ``args``."""
    return hae.HAEConfig(
        gamma=args.gamma,
        lam_turn=args.lam_turn,
        lam_seg=args.lam_seg,
        norm_adv=args.norm_adv,
        bootstrap_truncated=args.bootstrap_truncated,
        keep_penalty=args.keep_penalty,
        keep_penalty_mode=args.keep_penalty_mode,
        invalid_action_penalty_coef=args.invalid_action_penalty_coef,
        keep_consistency_penalty=args.keep_consistency_penalty,
        switch_advantage=args.switch_advantage,
    )


def run_hae(args: Args, turns: Sequence[Turn], values: torch.Tensor) -> hae.HAEResult:
    """ALGO LOGIC: Hierarchical Advantage Estimation over the batch of turns (§2.2)."""
    return hae.compute_hae(
        episode_id=[turn.episode_id for turn in turns],
        turn_index=[turn.turn_index for turn in turns],
        env_reward=[turn.reward for turn in turns],
        done=[turn.done for turn in turns],
        format_valid=[turn.format_valid for turn in turns],
        is_switch=[turn.is_switch for turn in turns],
        has_switch_block=[turn.has_switch_block for turn in turns],
        subgoal_span=[turn.subgoal_span for turn in turns],
        v_low=values[:, VALUE_LOW].numpy(),
        v_high=values[:, VALUE_HIGH].numpy(),
        v_term=values[:, VALUE_TERM].numpy(),
        config=hae_config(args),
    )


def block_targets(
    turns: Sequence[Turn], result: hae.HAEResult, values: torch.Tensor
) -> trainer.Targets:
    """ALGO LOGIC: token advantages from the block masks (§2.3) and the critic targets (§2.5)."""
    length = max(len(turn.response_ids) for turn in turns)
    masks = {
        name: trainer.pad_rows([torch.from_numpy(getattr(turn, name)) for turn in turns], length)
        > 0
        for name in ("action_mask", "subgoal_mask", "switch_mask")
    }
    segment_start = torch.as_tensor(np.asarray(result.segment_start), dtype=torch.bool)
    token_advantages, loss_mask = losses.token_advantages(
        np.asarray(result.a_low_norm),
        np.asarray(result.a_high_norm),
        np.asarray(result.a_term_norm),
        segment_start,
        action_mask=masks["action_mask"],
        subgoal_mask=masks["subgoal_mask"],
        switch_mask=masks["switch_mask"],
    )
    returns = torch.stack(
        [
            torch.as_tensor(np.asarray(r), dtype=torch.float32)
            for r in (result.r_low, result.r_high, result.r_term)
        ],
        dim=-1,
    )
    # low and term heads have a target on every turn, the high head on segment starts
    every_turn = torch.ones_like(segment_start)
    return trainer.Targets(
        token_advantages=token_advantages,
        loss_mask=loss_mask,
        returns=torch.nan_to_num(returns, nan=0.0),
        value_mask=torch.stack([every_turn, segment_start, every_turn], dim=-1),
        metrics={
            "values/v_low": float(values[:, VALUE_LOW].mean()),
            "values/v_high": float(values[:, VALUE_HIGH].mean()),
            "values/v_term": float(values[:, VALUE_TERM].mean()),
        },
    )


ALGORITHM = HiPER


def parse_args(argv: Sequence[str]) -> Args:
    """``[PRESET] [--flag value ...]`` for HiPER (see :func:`trainer.parse_args`)."""
    return trainer.parse_args(HiPER, argv)  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    """``hiper-gym train hiper``: train HiPER; returns the exit status."""
    return trainer.main(["hiper", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
