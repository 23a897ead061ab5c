"""HiPER: hierarchical PPO with Hierarchical Advantage Estimation for LLM agents.

Peng et al. 2026, "HiPER: Hierarchical Reinforcement Learning with Explicit Credit Assignment for
Large Language Model Agents", arXiv 2602.16165. Method spec: ``specs/hiper-method.md``.

One LLM policy writes, every turn, ``<switch>KEEP|SWITCH</switch><subgoal>...</subgoal>
<action>...</action>``. Each iteration:

1. **Rollout**: N environments, one episode each, one fresh prompt per turn; finished
   environments neither generate nor step.
2. **Old/ref log-probs and values**: batched forwards over all turns (critic heads: V_high and
   V_term at the last prompt token, V_low right after ``</subgoal>``).
3. **HAE** (:mod:`hiper_gym.agents.hae`): per-turn A_low (actions), A_high (subgoals at segment
   starts), A_term (switch tokens), standardized separately; critic targets R_low/R_high/R_term.
4. **PPO update** (:mod:`hiper_gym.agents.losses`): dual-clip surrogate on the block tokens
   (token-mean), entropy bonus, k3 KL to the reference, clipped value loss per head.

Run ``hiper-gym train`` (the ``tiny-cpu`` preset: a small random-init Qwen2 on the embedded
ALFWorld games, on the CPU) or ``hiper-gym train paper --model Qwen/Qwen2.5-1.5B-Instruct
--device cuda`` (the authors' settings). ``python agents/hiper.py --help`` lists every flag.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import tyro
from hiper_gym.agents import hae, losses
from hiper_gym.agents.checkpoint import (
    TOKENIZER_DIR,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from hiper_gym.agents.constrained import ResponseGrammar, allowed_token_masks
from hiper_gym.agents.env_workers import EnvWorkers, close_envs
from hiper_gym.agents.evaluate import evaluate_policy, success_summary
from hiper_gym.agents.learner_setup import (
    Models,
    build_env_tokenizer,
    build_models,
    draw_games,
    env_factory,
    is_config_only,
    load_tokenizer,
    make_envs,
    num_games,
    reset_options_for,
    slot_games,
)
from hiper_gym.agents.models import TinyShape
from hiper_gym.agents.policy import TurnBatch, critic_forward, pad_turns, policy_forward
from hiper_gym.agents.rollout import Rollout, Turn, collect_rollout
from hiper_gym.agents.run_logger import CURVE_FILE, RunLogger, plot_learning_curve


@dataclass
class Args:
    """HiPER's settings. Defaults are the authors' (hiper-method.md §2.4, §2.5, §4, §6)."""

    # --- experiment ---
    exp_name: str = "hiper"
    """name of the experiment (first part of the run name)"""
    seed: int = 6
    """seed of python, numpy, torch and the game draws (the authors' ``env.seed``)"""
    output_dir: str = "runs"
    """where run directories are written"""
    run_name: str | None = None
    """run directory name; default ``<exp_name>__<env>__<seed>__<unix time>``"""
    resume: str | None = None
    """a run directory or checkpoint to continue exactly (its saved config is used, except
    ``--num-iterations`` and the logging switches)"""
    device: str = "cpu"
    """``cpu`` or ``cuda`` (``cuda:1``...)"""
    threads: int | None = None
    """torch CPU threads (``None``: torch's default)"""
    progress: bool = True
    """show a live progress bar"""
    tensorboard: bool = True
    """write TensorBoard events under the run directory"""

    # --- environment ---
    env_id: str = "HiPER-ALFWorld-v0"
    """a registered text env (``HiPER-ALFWorld-v0``, ``HiPER-WebShop-v0``)"""
    train_split: str | None = "train"
    """the env's split for training episodes (``None``: the env's default)"""
    eval_split: str | None = "valid_seen"
    """the env's split for evaluation"""
    num_envs: int = 128
    """episodes per iteration, one per environment (``train_batch_size=128``, group size 1)"""
    env_workers: int = 0
    """worker processes for the envs (0: in this process); with workers an env steps, and its
    turn's text is read and the next prompt tokenized, while the policy samples the other rows"""
    max_turns: int = 50
    """turn limit of an episode (``env.max_steps=50``)"""
    history_length: int = 2
    """observation/action pairs shown in the prompt"""
    prompt_style: Literal["paper", "compact", "minimal"] = "paper"
    """``paper``: the authors' instructions; ``compact``: the same fields, no instructions;
    ``minimal``: compact without the admissible-actions list (for constrained decoding)"""
    reward_scale: float = 10.0
    """reward of a won episode's last turn (the authors: ``10 * won``)"""

    # --- models ---
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """actor: a Hub name, a local directory, ``tiny`` (random-init small Qwen2 over a word-level
    tokenizer built from the env) or ``qwen2.5-1.5b-shape`` (random weights, no download)"""
    critic: Literal["separate", "shared"] = "separate"
    """``separate``: a critic LM with a 3-output head (the authors'); ``shared``: heads on the
    actor's backbone"""
    tiny_hidden_size: int = 64
    """hidden size of the ``tiny`` model"""
    tiny_layers: int = 2
    """layers of the ``tiny`` model"""
    tiny_heads: int = 4
    """attention heads of the ``tiny`` model"""
    tiny_kv_heads: int = 2
    """key/value heads of the ``tiny`` model"""
    tiny_intermediate_size: int = 256
    """MLP size of the ``tiny`` model"""
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    """parameter dtype (bfloat16 on GPUs; float32 on CPUs)"""
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass (saves GPU memory)"""
    lora: bool = False
    """train LoRA adapters (peft) instead of all weights; the reference is then the base model"""
    lora_rank: int = 16
    """LoRA rank"""
    lora_alpha: int = 32
    """LoRA alpha"""

    # --- generation ---
    temperature: float = 1.0
    """training rollout temperature (top-p 1, no top-k)"""
    eval_temperature: float = 0.4
    """evaluation temperature (sampled)"""
    max_prompt_tokens: int = 2048
    """prompts are cut to their last this many tokens"""
    max_response_tokens: int = 512
    """response length limit"""
    constrained_decoding: bool = False
    """force the three-block format and an admissible command (off in the paper)"""
    max_subgoal_tokens: int = 16
    """longest free subgoal under constrained decoding"""
    max_query_tokens: int = 16
    """longest free query in a template command (WebShop's ``search[<your query>]``) under
    constrained decoding"""

    # --- PPO ---
    num_iterations: int = 150
    """training iterations (``total_epochs=150``)"""
    learning_rate: float = 1e-6
    """actor AdamW learning rate (constant)"""
    critic_learning_rate: float = 1e-5
    """critic (or shared value head) AdamW learning rate"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    update_epochs: int = 1
    """PPO epochs over each batch"""
    minibatch_size: int = 256
    """turns per optimizer step"""
    micro_batch_size: int = 16
    """turns per forward/backward (gradient accumulation inside a minibatch)"""
    clip_coef: float = 0.2
    """PPO ratio clip (epsilon low = high)"""
    dual_clip: float = 3.0
    """dual-clip bound c for negative advantages"""
    ent_coef: float = 1e-3
    """entropy bonus"""
    kl_coef: float = 0.01
    """k3 KL-to-reference loss coefficient (0 disables the reference model)"""
    vf_clip: float = 0.5
    """value clip around the rollout values"""
    high_value_coef: float = 1.0
    """weight of the high-head value loss"""
    term_value_coef: float = 1.0
    """weight of the term-head value loss"""
    shared_vf_coef: float = 1.0
    """weight of the value loss in the joint loss of a shared critic"""
    max_grad_norm: float = 1.0
    """gradient clipping"""

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

    # --- evaluation and checkpoints ---
    eval_every: int = 5
    """evaluate every this many iterations (0: only at the end)"""
    eval_episodes: int = 128
    """episodes per evaluation"""
    checkpoint_every: int = 10
    """save a checkpoint every this many iterations (and at the end)"""


def tiny_cpu_preset() -> Args:
    """The default of ``hiper-gym train``: the embedded ALFWorld games on 2 CPU cores.

    What differs from the authors' settings (:class:`Args` defaults), and why:

    * ``model="tiny"`` (2-layer Qwen2, hidden 64, random init, word-level tokenizer from the
      env) instead of Qwen2.5-1.5B-Instruct: no download, CPU speed. ``critic="shared"``: one
      forward for policy and values instead of a second LM. ``dtype=float32``, ``threads=1``,
      ``env_workers=1``: torch on one core, the envs on the other.
    * ``learning_rate=critic_learning_rate=2e-3`` (authors 1e-6 / 1e-5): a random-init model does
      not move at 1e-6. ``kl_coef=0``: a KL to a random reference only slows learning.
    * ``num_envs=32``, ``max_turns=40``, ``minibatch_size=64``, ``micro_batch_size=32``
      (authors 128, 50, 256, 16): about 8 s an iteration (torch on one core, the envs on the other).
    * ``prompt_style="minimal"`` (task, step, history, observation, subgoal; no admissible-actions
      list), ``max_prompt_tokens=512``, ``max_response_tokens=64``: constrained decoding already
      restricts actions to admissible commands, and the list was most of each prompt's tokens.
    * ``constrained_decoding=True`` (off in the paper), ``max_subgoal_tokens=4``: a random
      model never writes the three blocks by itself.
    * ``reward_scale=1`` (authors 10): advantages are standardized, so the scale only sizes the
      value loss; at 10 the shared head's value gradients (norm 2-4) dominated the clipped
      gradient of the shared backbone and the policy barely moved.
    * ``bootstrap_truncated=False`` (authors True for ALFWorld): the episode really ends at the
      turn limit, and bootstrapping a truncated episode from its own last value let every
      value drift down with the shaping penalties (to about -7 in 40 iterations).
    * ``keep_penalty=0`` (authors -0.3): a random model's subgoals are noise words; the penalty
      drove it to SWITCH on every turn, which rewrote the prompt's subgoal with new noise each
      turn, and success fell back to the random policy's. (Under constrained decoding a KEEP
      copies the subgoal exactly, so the consistency penalty never fires.)
    * ``eval_temperature=1.0`` (authors 0.4): the tiny policy sees two turns of history, and at
      0.4 it repeats loops (one run: 22% at 0.4 against 35% at 1.0 on the same games).
    * ``num_iterations=140`` (about 19 minutes on 2 cores), ``eval_split="train"`` (success on
      the training games), ``eval_every=0`` (one evaluation at the end, 72 episodes),
      ``checkpoint_every=10``.

    Everything else (HAE lambdas and gamma, clipping, entropy, temperatures, history length) is
    the authors'. Measured learning: README, "Training HiPER".
    """
    return dataclasses.replace(
        Args(),
        exp_name="hiper-tiny",
        model="tiny",
        critic="shared",
        dtype="float32",
        threads=1,
        env_workers=1,
        eval_split="train",
        num_envs=32,
        max_turns=40,
        prompt_style="minimal",
        max_prompt_tokens=512,
        max_response_tokens=64,
        constrained_decoding=True,
        max_subgoal_tokens=4,
        reward_scale=1.0,
        bootstrap_truncated=False,
        keep_penalty=0.0,
        num_iterations=140,
        learning_rate=2e-3,
        critic_learning_rate=2e-3,
        update_epochs=1,
        minibatch_size=64,
        micro_batch_size=32,
        ent_coef=1e-3,
        kl_coef=0.0,
        tiny_hidden_size=64,
        tiny_intermediate_size=256,
        eval_temperature=1.0,
        eval_every=0,
        eval_episodes=72,
        checkpoint_every=10,
    )


PRESETS: dict[str, tuple[str, Any]] = {
    "tiny-cpu": ("small random-init Qwen2 on the embedded ALFWorld games, CPU", tiny_cpu_preset),
    "paper": ("the authors' settings (Qwen2.5-1.5B-Instruct, GPU)", Args),
}
DEFAULT_PRESET = "tiny-cpu"


def parse_args(argv: Sequence[str]) -> Args:
    """``[PRESET] [--flag value ...]``; the preset (default ``tiny-cpu``) sets the defaults."""
    argv = list(argv)
    preset = DEFAULT_PRESET
    if argv and argv[0] in PRESETS:
        preset, argv = argv[0], argv[1:]
    presets_help = "; ".join(f"{name}: {text}" for name, (text, _) in PRESETS.items())
    return tyro.cli(
        Args,
        args=argv,
        default=PRESETS[preset][1](),
        prog="hiper-gym train [PRESET]",
        description=f"Train HiPER. Presets ({DEFAULT_PRESET} when omitted): {presets_help}.",
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


def validate(args: Args) -> None:
    """Reject settings that cannot run, with a clear message."""
    problems = []
    at_least_one = (
        "num_envs",
        "max_turns",
        "num_iterations",
        "update_epochs",
        "minibatch_size",
        "max_subgoal_tokens",
        "max_query_tokens",
    )
    for name in at_least_one:
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    if args.micro_batch_size < 1:
        problems.append("--micro-batch-size must be >= 1")
    if args.env_workers < 0:
        problems.append("--env-workers must be >= 0")
    if args.temperature <= 0 or args.eval_temperature <= 0:
        problems.append("temperatures must be > 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"--device {args.device}: CUDA is not available on this machine")
    if problems:
        raise SystemExit("hiper-gym train: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# Learner state
# ---------------------------------------------------------------------------------------------


@dataclass
class Learner:
    """Everything an iteration reads and updates."""

    args: Args
    tokenizer: Any
    models: Models
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer | None
    grammar: ResponseGrammar | None
    envs: list[gym.Env] | EnvWorkers
    probe_env: gym.Env  # on the training split: counts its games, maps games to reset options
    slots: list[list[int]]
    game_rng: np.random.Generator
    iteration: int = 0
    episodes_done: int = 0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CleanRL's "TRY NOT TO MODIFY: seeding")."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_learner(args: Args, tokenizer_dir: Path | None = None) -> Learner:
    """Envs, tokenizer, models and optimizers, deterministically from ``args.seed``."""
    seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    make_env = env_factory(
        args.env_id,
        split=args.train_split,
        history_length=args.history_length,
        prompt_style=args.prompt_style,
    )
    probe_env = make_env()
    for env in _eval_envs(args, 1):  # a bad --eval-split fails now, not after training
        env.close()
    if tokenizer_dir is not None:
        tokenizer = load_tokenizer(args.model, tokenizer_dir)
    elif is_config_only(args.model):
        tokenizer = build_env_tokenizer([probe_env] + _eval_envs(args, 1))
    else:
        tokenizer = load_tokenizer(args.model)
    envs: list[gym.Env] | EnvWorkers
    if args.env_workers:  # started first: the workers build their envs while the models load
        envs = EnvWorkers([make_env] * args.num_envs, tokenizer, args.env_workers)
    else:
        envs = [probe_env] + [make_env() for _ in range(args.num_envs - 1)]
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    models = build_models(
        model=args.model,
        vocab_size=len(tokenizer),
        tiny_shape=TinyShape(
            args.tiny_hidden_size,
            args.tiny_layers,
            args.tiny_heads,
            args.tiny_kv_heads,
            args.tiny_intermediate_size,
        ),
        critic=args.critic,
        dtype=dtype,
        device=args.device,
        gradient_checkpointing=args.gradient_checkpointing,
        lora=args.lora,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        with_reference=args.kl_coef > 0,
        pad_token_id=tokenizer.pad_token_id,
    )
    actor_params = [p for p in models.actor.parameters() if p.requires_grad]
    param_groups: list[dict[str, Any]] = [{"params": actor_params, "lr": args.learning_rate}]
    if models.value_head is not None:
        param_groups.append(
            {"params": list(models.value_head.parameters()), "lr": args.critic_learning_rate}
        )
    actor_optimizer = torch.optim.AdamW(param_groups, weight_decay=args.weight_decay)
    critic_optimizer = None
    if models.critic is not None:
        critic_optimizer = torch.optim.AdamW(
            models.critic.parameters(),
            lr=args.critic_learning_rate,
            weight_decay=args.weight_decay,
        )
    grammar = None
    if args.constrained_decoding:
        vocab_size = models.actor.get_output_embeddings().weight.shape[0]
        grammar = ResponseGrammar.from_tokenizer(
            tokenizer, vocab_size, args.max_subgoal_tokens, max_query_tokens=args.max_query_tokens
        )
    return Learner(
        args=args,
        tokenizer=tokenizer,
        models=models,
        actor_optimizer=actor_optimizer,
        critic_optimizer=critic_optimizer,
        grammar=grammar,
        envs=envs,
        probe_env=probe_env,
        slots=slot_games(args.num_envs, num_games(probe_env)),
        game_rng=np.random.default_rng(args.seed),
    )


def _eval_envs(args: Args, count: int) -> list[Any]:
    """Envs on the evaluation split (none when it is the training split)."""
    if args.eval_split is None or args.eval_split == args.train_split:
        return []
    return make_envs(
        args.env_id,
        count,
        split=args.eval_split,
        history_length=args.history_length,
        prompt_style=args.prompt_style,
    )


# ---------------------------------------------------------------------------------------------
# Batched forwards over turns
# ---------------------------------------------------------------------------------------------


def make_batch(learner: Learner, turns: Sequence[Turn]) -> TurnBatch:
    """Pad turns into a :class:`TurnBatch` on the learner's device (with grammar masks)."""
    allowed = None
    if learner.grammar is not None:
        allowed = [
            allowed_token_masks(
                learner.grammar, turn.admissible_commands, turn.keep_copy, turn.response_ids
            )
            for turn in turns
        ]
    batch = pad_turns(
        [turn.prompt_ids for turn in turns],
        [turn.response_ids for turn in turns],
        [turn.low_value_index for turn in turns],
        learner.tokenizer.pad_token_id,
        allowed,
    )
    return batch.to(learner.args.device)


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive chunks of ``items`` of at most ``size``."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


@torch.no_grad()
def score_turns(learner: Learner, turns: Sequence[Turn]) -> dict[str, list[torch.Tensor]]:
    """Old log-probs, reference log-probs and values of every turn (no gradients).

    Returns per-turn lists: ``old_log_probs`` and ``ref_log_probs`` (``[len(response)]``) and
    ``values`` (``[3]``: low, high, term).
    """
    args, models = learner.args, learner.models
    models.actor.eval()
    scored: dict[str, list[torch.Tensor]] = {"old_log_probs": [], "ref_log_probs": [], "values": []}
    for indices in chunks(range(len(turns)), args.micro_batch_size):
        micro = [turns[i] for i in indices]
        batch = make_batch(learner, micro)
        output = policy_forward(
            models.actor,
            batch,
            temperature=args.temperature,
            value_head=models.value_head,
            with_entropy=False,
        )
        values = output.values if models.critic is None else critic_forward(models.critic, batch)
        reference = reference_log_probs(learner, batch)
        for row, turn in enumerate(micro):
            length = len(turn.response_ids)
            scored["old_log_probs"].append(output.log_probs[row, :length].float().cpu())
            if reference is not None:
                scored["ref_log_probs"].append(reference[row, :length].float().cpu())
            scored["values"].append(values[row].float().cpu())
    return scored


def reference_log_probs(learner: Learner, batch: TurnBatch) -> torch.Tensor | None:
    """Log-probs of the frozen reference (the LoRA base when ``--lora``), or ``None`` if no KL."""
    args, models = learner.args, learner.models
    if args.kl_coef <= 0:
        return None
    if models.reference is not None:
        return policy_forward(
            models.reference, batch, temperature=args.temperature, with_entropy=False
        ).log_probs
    with models.actor.disable_adapter():
        return policy_forward(
            models.actor, batch, temperature=args.temperature, with_entropy=False
        ).log_probs


def pad_rows(rows: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """Right-pad 1-D tensors to ``[len(rows), length]`` with zeros."""
    out = torch.zeros(len(rows), length)
    for index, row in enumerate(rows):
        out[index, : row.shape[0]] = row
    return out


# ---------------------------------------------------------------------------------------------
# One iteration: rollout -> scores -> HAE -> PPO update
# ---------------------------------------------------------------------------------------------


def run_rollout(learner: Learner) -> Rollout:
    """ALGO LOGIC: one episode per env with the current policy at the training temperature."""
    args = learner.args
    games = draw_games(learner.game_rng, learner.slots)
    seeds = learner.game_rng.integers(2**31 - 1, size=len(games)).tolist()
    learner.models.actor.eval()
    rollout = collect_rollout(
        learner.envs,
        learner.models.actor,
        learner.tokenizer,
        reset_options=[reset_options_for(learner.probe_env, game) for game in games],
        reset_seeds=seeds,
        max_turns=args.max_turns,
        temperature=args.temperature,
        max_prompt_tokens=args.max_prompt_tokens,
        max_response_tokens=args.max_response_tokens,
        reward_scale=args.reward_scale,
        grammar=learner.grammar,
        first_episode_id=learner.episodes_done,
    )
    learner.episodes_done += len(rollout.episodes)
    return rollout


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
        v_low=values[:, 0].numpy(),
        v_high=values[:, 1].numpy(),
        v_term=values[:, 2].numpy(),
        config=hae_config(args),
    )


@dataclass
class UpdateData:
    """Per-turn training targets of one iteration (CPU tensors, padded to the longest response)."""

    token_advantages: torch.Tensor  # [N, R]
    loss_mask: torch.Tensor  # [N, R] bool: tokens in the PG/entropy/KL losses
    old_log_probs: torch.Tensor  # [N, R]
    ref_log_probs: torch.Tensor | None  # [N, R]
    old_values: torch.Tensor  # [N, 3]
    returns: torch.Tensor  # [N, 3] (R_low, R_high, R_term); NaN where a head has no target
    value_mask: torch.Tensor  # [N, 3] bool


def build_update_data(
    turns: Sequence[Turn], scored: dict[str, list[torch.Tensor]], result: hae.HAEResult
) -> UpdateData:
    """Token advantages from the block masks (§2.3) and the critic targets (§2.5)."""
    length = max(len(turn.response_ids) for turn in turns)
    masks = {
        name: pad_rows([torch.from_numpy(getattr(turn, name)).float() for turn in turns], length)
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
    value_mask = torch.stack(
        [torch.ones_like(segment_start), segment_start, torch.ones_like(segment_start)], dim=-1
    )
    return UpdateData(
        token_advantages=token_advantages,
        loss_mask=loss_mask,
        old_log_probs=pad_rows(scored["old_log_probs"], length),
        ref_log_probs=pad_rows(scored["ref_log_probs"], length)
        if scored["ref_log_probs"]
        else None,
        old_values=torch.stack(scored["values"]),
        returns=torch.nan_to_num(returns, nan=0.0),
        value_mask=value_mask,
    )


def ppo_update(learner: Learner, turns: Sequence[Turn], data: UpdateData) -> dict[str, float]:
    """ALGO LOGIC: PPO epochs over shuffled minibatches of turns; returns mean loss statistics."""
    args, models = learner.args, learner.models
    models.actor.train()
    if models.critic is not None:
        models.critic.train()
    stats: dict[str, list[float]] = {}
    for _ in range(args.update_epochs):
        order = torch.randperm(len(turns)).tolist()
        for minibatch in chunks(order, args.minibatch_size):
            learner.actor_optimizer.zero_grad(set_to_none=True)
            if learner.critic_optimizer is not None:
                learner.critic_optimizer.zero_grad(set_to_none=True)
            for micro in chunks(minibatch, args.micro_batch_size):
                weight = len(micro) / len(minibatch)  # token-mean per micro-batch, as verl
                step_stats = micro_step(learner, turns, data, micro, weight)
                for key, value in step_stats.items():
                    stats.setdefault(key, []).append(value)
            actor_params = [
                p for group in learner.actor_optimizer.param_groups for p in group["params"]
            ]
            grad_norm = torch.nn.utils.clip_grad_norm_(actor_params, args.max_grad_norm)
            stats.setdefault("losses/actor_grad_norm", []).append(float(grad_norm))
            learner.actor_optimizer.step()
            if learner.critic_optimizer is not None and models.critic is not None:
                critic_norm = torch.nn.utils.clip_grad_norm_(
                    models.critic.parameters(), args.max_grad_norm
                )
                stats.setdefault("losses/critic_grad_norm", []).append(float(critic_norm))
                learner.critic_optimizer.step()
    return {key: float(np.mean(values)) for key, values in stats.items()}


def micro_step(
    learner: Learner,
    turns: Sequence[Turn],
    data: UpdateData,
    indices: list[int],
    weight: float,
) -> dict[str, float]:
    """Forward and backward of one micro-batch (gradients accumulate)."""
    args, models, device = learner.args, learner.models, learner.args.device
    batch = make_batch(learner, [turns[i] for i in indices])
    length = batch.response_length
    advantages = data.token_advantages[indices, :length].to(device)
    mask = data.loss_mask[indices, :length].to(device) & batch.response_mask.bool()
    old_log_probs = data.old_log_probs[indices, :length].to(device)

    output = policy_forward(
        models.actor, batch, temperature=args.temperature, value_head=models.value_head
    )
    ref_log_probs = None
    if data.ref_log_probs is not None:
        ref_log_probs = data.ref_log_probs[indices, :length].to(device)
    actor_loss, actor_stats = losses.actor_loss(
        output.log_probs,
        old_log_probs,
        advantages,
        mask,
        entropy=output.entropy,
        ref_log_prob=ref_log_probs,
        clip_eps=args.clip_coef,
        dual_clip=args.dual_clip,
        entropy_coef=args.ent_coef,
        kl_coef=args.kl_coef,
    )

    # value loss: separate critic LM, or heads on the actor (then one joint backward)
    values = output.values if models.critic is None else critic_forward(models.critic, batch)
    value_loss, value_stats = losses.hiper_value_loss(
        *(
            {head: tensor[:, column] for column, head in enumerate(losses.HEADS)}
            for tensor in (
                values,
                data.old_values[indices].to(device),
                data.returns[indices].to(device),
                data.value_mask[indices].to(device),
            )
        ),
        clip=args.vf_clip,
        high_coef=args.high_value_coef,
        term_coef=args.term_value_coef,
    )
    if models.critic is None:
        (weight * (actor_loss + args.shared_vf_coef * value_loss)).backward()
    else:
        (weight * actor_loss).backward()
        (weight * value_loss).backward()
    stats = {f"losses/{key}": float(value) for key, value in actor_stats.items()}
    stats.update({f"losses/{key}": float(value) for key, value in value_stats.items()})
    stats["losses/value_loss"] = float(value_loss.detach())
    return stats


def rollout_metrics(rollout: Rollout) -> dict[str, float]:
    """Success, return, switch rate, segment length and episode length of a rollout."""
    episodes, turns = rollout.episodes, rollout.turns
    total_turns = max(len(turns), 1)
    return {
        "train/success": float(np.mean([episode.won for episode in episodes])),
        "train/return": float(np.mean([episode.env_return for episode in episodes])),
        "train/switch_rate": sum(turn.is_switch for turn in turns) / total_turns,
        "train/segment_length": float(
            np.mean([episode.turns / max(episode.segments, 1) for episode in episodes])
        ),
        "train/episode_turns": float(np.mean([episode.turns for episode in episodes])),
        "train/format_valid": sum(turn.format_valid for turn in turns) / total_turns,
    }


def train_iteration(learner: Learner, defer_interrupts: DeferredInterrupt) -> dict[str, float]:
    """One HiPER iteration; returns its metrics (including the time split)."""
    args = learner.args
    start = time.perf_counter()

    # 1. ROLLOUT
    rollout = run_rollout(learner)
    turns = rollout.turns
    rollout_done = time.perf_counter()

    # 2. OLD / REFERENCE LOG-PROBS AND VALUES
    scored = score_turns(learner, turns)
    values = torch.stack(scored["values"])
    scored_done = time.perf_counter()

    # 3. HIERARCHICAL ADVANTAGE ESTIMATION
    result = run_hae(args, turns, values)
    data = build_update_data(turns, scored, result)

    # 4. PPO UPDATE (a Ctrl-C here is acted on after the iteration, see train_loop)
    with defer_interrupts:
        update_stats = ppo_update(learner, turns, data)
    end = time.perf_counter()

    metrics = rollout_metrics(rollout)
    metrics.update(update_stats)
    metrics.update(
        {
            "values/v_low": float(values[:, 0].mean()),
            "values/v_high": float(values[:, 1].mean()),
            "values/v_term": float(values[:, 2].mean()),
            "time/rollout_generation": rollout.times.generation,
            "time/env": rollout.times.env,
            "time/bookkeeping": rollout.times.bookkeeping,
            "time/env_in_workers": rollout.times.in_workers,
            "time/scoring": scored_done - rollout_done,
            "time/update": end - scored_done,
            "time/iteration": end - start,
            "time/turns_per_second": len(turns) / max(end - start, 1e-9),
            "turns": float(len(turns)),
        }
    )
    return metrics


class DeferredInterrupt:
    """The PPO update's guard: Ctrl-C during it is only remembered (``pending``).

    The train loop acts on it once the iteration is complete, so a checkpoint never holds a
    half-applied update; ``updating`` tells whether an update was cut short by an error.
    """

    def __init__(self) -> None:
        self.pending = False
        self.updating = False

    def _handler(self, signum: int, frame: Any) -> None:
        self.pending = True

    def __enter__(self) -> DeferredInterrupt:
        self.updating = True
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: signals cannot be handled here
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.updating = False
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def learner_state(learner: Learner, rng: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What a checkpoint holds (see :mod:`hiper_gym.agents.checkpoint`)."""
    models = learner.models
    return {
        "config": dataclasses.asdict(learner.args),
        "run_dir": str(run_dir),
        "iteration": learner.iteration,
        "episodes_done": learner.episodes_done,
        "actor": models.actor.state_dict(),
        "actor_config": models.actor.config.to_dict(),
        "critic": models.critic.state_dict() if models.critic is not None else None,
        "value_head": models.value_head.state_dict() if models.value_head is not None else None,
        "actor_optimizer": learner.actor_optimizer.state_dict(),
        "critic_optimizer": (
            learner.critic_optimizer.state_dict() if learner.critic_optimizer is not None else None
        ),
        "rng": rng,
    }


def restore_learner(learner: Learner, state: dict[str, Any]) -> None:
    """Load a checkpoint's weights, optimizers, counters and RNG states into ``learner``."""
    models = learner.models
    models.actor.load_state_dict(state["actor"])
    if models.critic is not None:
        models.critic.load_state_dict(state["critic"])
    if models.value_head is not None:
        models.value_head.load_state_dict(state["value_head"])
    learner.actor_optimizer.load_state_dict(state["actor_optimizer"])
    if learner.critic_optimizer is not None:
        learner.critic_optimizer.load_state_dict(state["critic_optimizer"])
    learner.iteration = int(state["iteration"])
    learner.episodes_done = int(state["episodes_done"])
    restore_rng_state(state["rng"], learner.game_rng)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

FINAL_EVAL_FILE = "final_eval.json"
"""Success per task type (with 95% intervals) of the evaluation after the last iteration."""

METRIC_COLUMNS = [
    "iteration",
    "episodes",
    "train/success",
    "train/return",
    "train/switch_rate",
    "train/segment_length",
    "train/episode_turns",
    "train/format_valid",
    "eval/success",
    "losses/pg_loss",
    "losses/entropy",
    "losses/kl",
    "losses/value_loss",
    "losses/pg_clipfrac",
    "losses/ppo_kl",
    "losses/actor_grad_norm",
    "losses/critic_grad_norm",
    "losses/vf_loss_low",
    "losses/vf_loss_high",
    "losses/vf_loss_term",
    "values/v_low",
    "values/v_high",
    "values/v_term",
    "time/rollout_generation",
    "time/env",
    "time/bookkeeping",
    "time/env_in_workers",
    "time/scoring",
    "time/update",
    "time/iteration",
    "time/turns_per_second",
    "time/elapsed",
]


def resolve_run(args: Args) -> tuple[Args, Path, dict[str, Any] | None]:
    """The effective args, the run directory and, on resume, the checkpoint state."""
    if args.resume is None:
        run_name = args.run_name or (
            f"{args.exp_name}__{args.env_id}__{args.seed}__{int(time.time())}"
        )
        return args, Path(args.output_dir) / run_name, None
    directory, state = load_checkpoint(args.resume)
    saved = Args(**state["config"])
    resumed = dataclasses.replace(
        saved,
        resume=str(directory),
        num_iterations=args.num_iterations,
        progress=args.progress,
        tensorboard=args.tensorboard,
    )
    # checkpoints live in <run>/checkpoints/iter_N: the run is found even if it was moved
    return resumed, directory.parent.parent, state


def main(argv: Sequence[str] | None = None) -> int:
    """``hiper-gym train``: train HiPER; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    validate(args)
    try:
        args, run_dir, state = resolve_run(args)
    except FileNotFoundError as error:
        print(f"hiper-gym train: {error}", file=sys.stderr)
        return 2
    tokenizer_dir = Path(args.resume) / TOKENIZER_DIR if state is not None else None
    learner = build_learner(args, tokenizer_dir)
    if state is not None:
        restore_learner(learner, state)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    logger = RunLogger(
        run_dir,
        METRIC_COLUMNS,
        resume_after=learner.iteration if state is not None else None,
        tensorboard=args.tensorboard,
    )
    print(f"run directory: {run_dir}", flush=True)
    try:
        return train_loop(learner, logger, run_dir)
    finally:
        logger.close()
        close_learner_envs(learner)


def close_learner_envs(learner: Learner) -> None:
    """Close the training envs (stopping env workers) and the probe env."""
    close_envs(learner.envs)
    if isinstance(learner.envs, EnvWorkers):
        learner.probe_env.close()


def train_loop(learner: Learner, logger: RunLogger, run_dir: Path) -> int:
    """Iterate until ``num_iterations``; checkpoint periodically, at the end and on Ctrl-C."""
    args = learner.args
    checkpoint_root = run_dir / "checkpoints"
    progress = make_progress(args, learner.iteration)
    started = time.perf_counter()
    defer = DeferredInterrupt()
    # what a checkpoint of the last completed iteration must restore
    rng_at_start, episodes_at_start = rng_state(learner.game_rng), learner.episodes_done
    try:
        while learner.iteration < args.num_iterations:
            metrics = train_iteration(learner, defer)
            learner.iteration += 1
            rng_at_start, episodes_at_start = rng_state(learner.game_rng), learner.episodes_done
            if args.eval_every and learner.iteration % args.eval_every == 0:
                metrics["eval/success"] = run_evaluation(learner)["success"]
            metrics["episodes"] = learner.episodes_done
            metrics["time/elapsed"] = time.perf_counter() - started
            logger.log(learner.iteration, metrics)
            update_progress(progress, metrics)
            if learner.iteration % args.checkpoint_every == 0:
                save(learner, checkpoint_root, rng_at_start, run_dir)
            if defer.pending:  # Ctrl-C arrived during the update
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        # the weights are those of the last completed iteration (an interrupted rollout changed
        # no weights); roll the counters back to it too
        learner.episodes_done = episodes_at_start
        directory = save(learner, checkpoint_root, rng_at_start, run_dir)
        print(f"\ninterrupted: checkpoint saved to {directory}", file=sys.stderr)
        return 130
    except Exception:
        # an env or model failure: checkpoint the last completed iteration, unless the update
        # was under way (its weights are then neither the old nor the new ones)
        if defer.updating:
            raise
        learner.episodes_done = episodes_at_start
        directory = save(learner, checkpoint_root, rng_at_start, run_dir)
        print(f"\nfailed: checkpoint of the last iteration saved to {directory}", file=sys.stderr)
        raise
    finally:
        if progress is not None:
            progress.close()
    final = run_evaluation(learner)
    print(success_summary(final, title=f"final evaluation ({args.eval_split or 'default'} split)"))
    (run_dir / FINAL_EVAL_FILE).write_text(json.dumps(final, indent=2) + "\n")
    save(learner, checkpoint_root, rng_at_start, run_dir)
    plot_learning_curve(run_dir / "metrics.csv", run_dir / CURVE_FILE, title=run_dir.name)
    print(f"done: {run_dir}")
    return 0


def save(learner: Learner, root: Path, rng: dict[str, Any], run_dir: Path) -> Path:
    """Checkpoint the learner and refresh the learning-curve PNG."""
    directory = save_checkpoint(
        root, learner.iteration, learner_state(learner, rng, run_dir), learner.tokenizer
    )
    if (run_dir / "metrics.csv").exists():
        plot_learning_curve(run_dir / "metrics.csv", run_dir / CURVE_FILE, title=run_dir.name)
    return directory


def run_evaluation(learner: Learner) -> dict[str, Any]:
    """Evaluate the current policy on the evaluation split at the evaluation temperature.

    The random states are restored afterwards, so evaluating does not change the training run
    (a resumed run, which does not replay evaluations, stays identical).
    """
    args = learner.args
    eval_envs = _eval_envs(args, args.num_envs)
    envs = eval_envs or learner.envs
    probe_env = eval_envs[0] if eval_envs else learner.probe_env
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            return evaluate_policy(
                envs,
                learner.models.actor,
                learner.tokenizer,
                num_episodes=args.eval_episodes,
                max_turns=args.max_turns,
                temperature=args.eval_temperature,
                max_prompt_tokens=args.max_prompt_tokens,
                max_response_tokens=args.max_response_tokens,
                reward_scale=args.reward_scale,
                grammar=learner.grammar,
                seed=args.seed,
                probe_env=probe_env,
            )
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if envs is not learner.envs:
            close_envs(envs)


def make_progress(args: Args, initial: int) -> Any:
    """A tqdm bar over iterations, or ``None`` when ``--no-progress``."""
    if not args.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=args.num_iterations, initial=initial, desc="HiPER", unit="it", dynamic_ncols=True
    )


def update_progress(progress: Any, metrics: dict[str, float]) -> None:
    """Show success, return, switch rate and mean segment length on the bar."""
    summary = (
        f"{int(metrics.get('episodes', 0))} episodes | success {metrics['train/success']:.2f} "
        f"return {metrics['train/return']:.2f} switch {metrics['train/switch_rate']:.2f} "
        f"seg {metrics['train/segment_length']:.1f} | {metrics['time/iteration']:.1f}s/it"
    )
    if progress is None:
        print(summary, flush=True)
        return
    progress.set_postfix_str(summary, refresh=False)
    progress.update(1)


if __name__ == "__main__":
    raise SystemExit(main())
