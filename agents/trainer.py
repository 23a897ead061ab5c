"""The trainer every algorithm shares: rollout, scoring, update loop, checkpoints, evaluation.

An algorithm (:mod:`~hiper_gym.agents.hiper`, :mod:`~hiper_gym.agents.ppo`,
:mod:`~hiper_gym.agents.grpo`, :mod:`~hiper_gym.agents.gigpo`) is a small subclass of
:class:`Algorithm` that says only what differs: its ``Args`` and presets, how many value heads
its critic has and where they read, how it turns a rollout into per-token advantages and value
targets, and its value loss. Everything else is written once here. Each iteration:

1. **Rollout** (:func:`run_rollout`): ``num_envs`` episodes, in groups of ``group_size`` copies
   of one game with one reset seed; finished envs neither generate nor step.
2. **Scoring** (:func:`score_turns`): old and reference log-probs and the critic's values of
   every turn, in batched forwards without gradients.
3. **Advantages** (:meth:`Algorithm.targets`): the algorithm's estimator, usually a pure function
   of :mod:`hiper_gym.agents.advantages` or :mod:`hiper_gym.agents.hae`.
4. **Update** (:func:`ppo_update`): clipped PPO surrogate on the masked response tokens, entropy
   bonus, k3 KL to the reference, and the algorithm's value loss.

``hiper-gym train [ALGO] [PRESET] [--flag value ...]`` runs :func:`main`; ``ALGO`` defaults to
``hiper`` and ``PRESET`` to ``tiny-cpu``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
import tyro

from hiper_gym import DataError
from hiper_gym.agents import distributed, losses
from hiper_gym.agents.checkpoint import (
    TOKENIZER_DIR,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from hiper_gym.agents.constrained import ResponseGrammar, allowed_token_masks
from hiper_gym.agents.distributed import Ranks
from hiper_gym.agents.env_workers import EnvRunner, close_envs, make_env_runner
from hiper_gym.agents.evaluate import evaluate_policy, success_summary
from hiper_gym.agents.learner_setup import (
    PROMPT_STYLES,
    Models,
    build_env_tokenizer,
    build_models,
    draw_games,
    env_factory,
    env_family,
    env_settings,
    held_out_split,
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
from hiper_gym.agents.run_logger import CURVE_FILE, QuietLogger, RunLogger, plot_learning_curve
from hiper_gym.agents.sampler import Sampler, make_sampler

#: ``hiper-gym train ALGO``: algorithm name -> module defining ``ALGORITHM``.
ALGORITHMS: dict[str, str] = {
    "hiper": "hiper_gym.agents.hiper",
    "ppo": "hiper_gym.agents.ppo",
    "grpo": "hiper_gym.agents.grpo",
    "rloo": "hiper_gym.agents.grpo",
    "gigpo": "hiper_gym.agents.gigpo",
}
DEFAULT_ALGORITHM = "hiper"
DEFAULT_PRESET = "tiny-cpu"
FINAL_EVAL_FILE = "final_eval.json"
"""Success per task type (with 95% intervals) of the evaluation after the last iteration."""


@dataclass
class TrainArgs:
    """Settings every algorithm shares. Defaults are the HiPER authors' (hiper-method.md §4, §6)."""

    # --- experiment ---
    exp_name: str = "run"
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
    data_dir: str | None = None
    """the env's real data: an ALFWorld tree (``json_2.1.1/`` and ``logic/``, as
    ``ALFWORLD_DATA``) or a WebShop folder (``items_shuffle*.json``...); ``None``:
    ``$ALFWORLD_DATA`` / ``$WEBSHOP_DATA`` if set, else the embedded games"""
    train_split: str | None = "train"
    """the env's split for training episodes (``None``: the env's default)"""
    eval_split: str | None = "held-out"
    """the env's split for evaluation; ``held-out``: ALFWorld's ``valid_unseen``, WebShop's
    ``test`` goals (upstream's split)"""
    num_envs: int = 128
    """episodes per iteration, one per environment (``train_batch_size=128``)"""
    group_size: int = 1
    """copies of each drawn game per iteration, played with the same reset seed (GRPO-style
    groups; ``num_envs`` must be a multiple)"""
    env_workers: int = 0
    """worker processes (or Ray actors) for the envs (0: in this process); with workers an env
    steps, and its turn's text is read and the next prompt tokenized, while the policy samples
    the other rows"""
    env_backend: Literal["local", "ray"] = "local"
    """``local``: worker processes on this machine; ``ray``: Ray actors, locally or on a cluster
    (``pip install 'hiper-gym[ray]'``)"""
    ray_address: str | None = None
    """with ``--env-backend ray``: ``None`` starts Ray here; ``auto`` or ``ray://host:10001``
    joins a running cluster"""
    max_turns: int = 50
    """turn limit of an episode (``env.max_steps=50``)"""
    history_length: int = 2
    """observation/action pairs shown in the prompt"""
    prompt_style: Literal["paper", "compact", "minimal"] = "paper"
    """``paper``: the authors' instructions; ``compact``: the same fields, no instructions;
    ``minimal``: compact without the admissible-actions list (for constrained decoding)"""
    response_format: Literal["plan_execute", "flat"] = "plan_execute"
    """``plan_execute``: switch, subgoal and action blocks (the Plan-Execute prompt);
    ``flat``: an ``<action>`` block only (ReAct-style)"""
    reward_scale: float = 10.0
    """reward of a won episode's last turn (the authors: ``10 * won``)"""

    # --- models ---
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    """actor: a Hub name, a local directory, ``tiny`` (random-init small Qwen2 over a word-level
    tokenizer built from the env) or ``qwen2.5-1.5b-shape`` (random weights, no download)"""
    critic: Literal["separate", "shared"] = "separate"
    """``separate``: a critic LM with a value head per output (the authors'); ``shared``: heads on
    the actor's backbone (ignored by critic-free algorithms)"""
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

    base_policy: Literal["none", "sft", "auto"] = "none"
    """``sft``: first behaviour-clone ``--model`` on expert demonstrations of the training games
    (``hiper-gym sft``, into ``<run>/base``), then train from that base policy; ``auto``: ``sft``
    for a random-init model (``tiny``, ``qwen2.5-1.5b-shape``), ``none`` for a given one"""
    base_demo_episodes: int | None = None
    """with ``--base-policy sft``: expert episodes to clone (``None``: every training game once)"""
    base_sft_steps: int = 200
    """with ``--base-policy sft``: optimizer steps of behaviour cloning (32 turns each)"""
    base_rename_copies: int = 0
    """with ``--base-policy sft`` on ALFWorld: renamed copies of every demonstration episode
    (``hiper-gym sft --rename-copies``); not used on other envs, whose base clones the plain
    demonstrations"""

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
    """force the response format and an admissible command (off in the paper)"""
    max_subgoal_tokens: int = 16
    """longest free subgoal under constrained decoding"""
    max_query_tokens: int = 16
    """longest free query in a template command (WebShop's ``search[<your query>]``) under
    constrained decoding"""
    rollout_backend: Literal["hf", "vllm"] = "hf"
    """``hf``: the actor's ``generate``; ``vllm``: vLLM's offline engine in this process, given
    the actor's weights in memory after every update (``pip install 'hiper-gym[vllm]'``)"""
    vllm_gpu_memory_utilization: float = 0.3
    """with ``--rollout-backend vllm`` on a GPU: the share of its memory vLLM takes (weights
    and KV cache); training keeps the rest"""
    vllm_sleep_level: int = 0
    """with ``--rollout-backend vllm`` on a GPU: 1 or 2 frees vLLM's memory while training
    (``LLM.sleep``: 1 offloads its weights to CPU memory, 2 drops them); 0 keeps it"""

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
    shared_vf_coef: float = 1.0
    """weight of the value loss in the joint loss of a shared critic"""
    max_grad_norm: float = 1.0
    """gradient clipping"""

    # --- evaluation and checkpoints ---
    eval_every: int = 5
    """evaluate every this many iterations (0: only at the end)"""
    eval_episodes: int = 128
    """episodes per evaluation"""
    eval_greedy: bool = False
    """also evaluate with greedy decoding (beside sampling at ``eval_temperature``)"""
    checkpoint_every: int = 10
    """save a checkpoint every this many iterations (and at the end)"""


def tiny_cpu_settings() -> dict[str, Any]:
    """What every algorithm's ``tiny-cpu`` preset changes from the authors' settings, and why.

    * ``model="tiny"`` (2-layer Qwen2, hidden 64, random init, word-level tokenizer from the
      env): no download, CPU speed. ``critic="shared"``: one forward for policy and values.
      ``dtype=float32``, ``threads=1``, ``env_workers=1``: torch on one core, the envs on the
      other.
    * ``learning_rate=critic_learning_rate=2e-3``: a random-init model does not move at 1e-6.
      ``kl_coef=0``: a KL to a random reference only slows learning.
    * ``num_envs=32``, ``max_turns=40``, ``minibatch_size=64``, ``micro_batch_size=32``: about
      8 s an iteration on 2 cores.
    * ``prompt_style="minimal"``, ``max_prompt_tokens=512``, ``max_response_tokens=64``,
      ``constrained_decoding=True``, ``max_subgoal_tokens=4``: a random model never writes the
      response format by itself, and the grammar already restricts actions to admissible ones.
    * ``reward_scale=1``: advantages are standardized, so the scale only sizes the value loss;
      at 10 the shared head's value gradients dominated the clipped policy gradient.
    * ``eval_temperature=1.0``: with two turns of history the tiny policy loops at 0.4.
    * ``num_iterations=140``, ``eval_every=0`` (one held-out evaluation at the end, with the
      training games beside it), ``eval_episodes=72``.
    """
    return {
        "model": "tiny",
        "critic": "shared",
        "dtype": "float32",
        "threads": 1,
        "env_workers": 1,
        "num_envs": 32,
        "max_turns": 40,
        "prompt_style": "minimal",
        "max_prompt_tokens": 512,
        "max_response_tokens": 64,
        "constrained_decoding": True,
        "max_subgoal_tokens": 4,
        "reward_scale": 1.0,
        "num_iterations": 140,
        "learning_rate": 2e-3,
        "critic_learning_rate": 2e-3,
        "update_epochs": 1,
        "minibatch_size": 64,
        "micro_batch_size": 32,
        "ent_coef": 1e-3,
        "kl_coef": 0.0,
        "eval_temperature": 1.0,
        "eval_every": 0,
        "eval_episodes": 72,
        "checkpoint_every": 10,
    }


# ---------------------------------------------------------------------------------------------
# What an algorithm says
# ---------------------------------------------------------------------------------------------


@dataclass
class Targets:
    """An algorithm's training targets for one batch of turns (CPU tensors).

    Attributes:
        token_advantages: ``[N, R]`` advantage of every response token (0 off the loss mask).
        loss_mask: ``[N, R]`` bool, tokens in the policy-gradient, entropy and KL losses.
        returns: ``[N, K]`` value targets (K heads, or K = R per-token values), or ``None``
            for a critic-free algorithm.
        value_mask: ``[N, K]`` bool, where a value target exists.
        metrics: Scalars to log (e.g. the estimator's statistics).
    """

    token_advantages: torch.Tensor
    loss_mask: torch.Tensor
    returns: torch.Tensor | None = None
    value_mask: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Algorithm:
    """Base class of the learners: override what differs, inherit the rest.

    Class attributes a subclass sets: ``name``, ``args_class`` (a :class:`TrainArgs`
    subclass), ``presets`` (name -> (help, factory)) and ``value_heads`` (0: critic-free).
    """

    name: ClassVar[str] = ""
    args_class: ClassVar[type[TrainArgs]] = TrainArgs
    presets: ClassVar[dict[str, tuple[str, Callable[[], TrainArgs]]]] = {}
    value_heads: ClassVar[int] = 0
    metric_columns: ClassVar[list[str]] = []
    """Extra ``metrics.csv`` columns this algorithm logs."""

    def __init__(self, args: TrainArgs) -> None:
        self.args = args

    def validate(self) -> list[str]:
        """Problems with the algorithm's own settings (one message each)."""
        return []

    def read_values(self, per_token_values: torch.Tensor, batch: TurnBatch) -> torch.Tensor:
        """Values ``[B, K]`` out of per-token head outputs ``[B, P + R, K]``.

        Default: every head at the last prompt token, the state value of the turn.
        """
        return per_token_values[:, batch.prompt_length - 1, :].float()

    def turn_values(self, values: torch.Tensor, response_length: int) -> torch.Tensor:
        """One turn's row of :meth:`read_values` as stored for the update (default: as is)."""
        return values

    def targets(self, rollout: Rollout, values: torch.Tensor | None) -> Targets:
        """Per-token advantages and value targets of a rollout (``values``: ``[N, K]``)."""
        raise NotImplementedError

    def value_loss(
        self,
        values: torch.Tensor,
        old_values: torch.Tensor,
        returns: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Default: verl's clipped value loss over every masked cell."""
        return losses.clipped_value_loss(values, old_values, returns, mask, clip=self.args.vf_clip)

    def rollout_metrics(self, rollout: Rollout) -> dict[str, float]:
        """Extra per-iteration metrics of the rollout (default: none)."""
        return {}


def whole_response_targets(turns: Sequence[Turn], turn_advantage: Any) -> Targets:
    """Every response token of a turn gets the turn's advantage (verl-agent's flat algorithms)."""
    length = max(len(turn.response_ids) for turn in turns)
    loss_mask = torch.zeros(len(turns), length, dtype=torch.bool)
    for row, turn in enumerate(turns):
        loss_mask[row, : len(turn.response_ids)] = True
    per_turn = torch.as_tensor(np.asarray(turn_advantage, dtype=np.float32))
    return Targets(token_advantages=per_turn[:, None] * loss_mask, loss_mask=loss_mask)


def turn_columns(rollout: Rollout) -> dict[str, Any]:
    """The standard estimator columns of :mod:`hiper_gym.agents.advantages`, one row per turn."""
    turns = rollout.turns
    return {
        "group_id": np.array([turn.group_id for turn in turns]),
        "episode_id": np.array([turn.episode_id for turn in turns]),
        "turn_index": np.array([turn.turn_index for turn in turns]),
        "reward": np.array([turn.reward for turn in turns], dtype=np.float64),
        "format_valid": np.array([turn.format_valid for turn in turns], dtype=bool),
        "done": np.array([turn.done for turn in turns], dtype=bool),
        "observation": [turn.observation for turn in turns],
        "action": [turn.action for turn in turns],
    }


# ---------------------------------------------------------------------------------------------
# Command line: algorithm, preset, flags
# ---------------------------------------------------------------------------------------------


def load_algorithm(name: str) -> type[Algorithm]:
    """The :class:`Algorithm` subclass registered as ``name`` in :data:`ALGORITHMS`."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}")
    module = importlib.import_module(ALGORITHMS[name])
    return module.ALGORITHMS[name] if hasattr(module, "ALGORITHMS") else module.ALGORITHM


def parse_args(algorithm: type[Algorithm], argv: Sequence[str]) -> TrainArgs:
    """``[PRESET] [--flag value ...]``; the preset (default ``tiny-cpu``) sets the defaults."""
    argv = list(argv)
    preset = DEFAULT_PRESET
    if argv and argv[0] in algorithm.presets:
        preset, argv = argv[0], argv[1:]
    presets_help = "; ".join(f"{name}: {text}" for name, (text, _) in algorithm.presets.items())
    return tyro.cli(
        algorithm.args_class,
        args=argv,
        default=algorithm.presets[preset][1](),
        prog=f"hiper-gym train {algorithm.name} [PRESET]",
        description=(
            f"Train {algorithm.name}. Presets ({DEFAULT_PRESET} when omitted): {presets_help}."
        ),
    )


#: Settings that must be >= 1, and those that must be >= 0.
AT_LEAST_ONE = (
    "num_envs",
    "group_size",
    "max_turns",
    "num_iterations",
    "update_epochs",
    "minibatch_size",
    "micro_batch_size",
    "max_subgoal_tokens",
    "max_query_tokens",
    "max_prompt_tokens",
    "max_response_tokens",
    "eval_episodes",
    "checkpoint_every",
    "tiny_hidden_size",
    "tiny_layers",
    "tiny_heads",
    "tiny_kv_heads",
    "tiny_intermediate_size",
    "lora_rank",
    "lora_alpha",
    "base_sft_steps",
)
AT_LEAST_ZERO = (
    "env_workers",
    "history_length",
    "eval_every",
    "seed",
    "weight_decay",
    "base_rename_copies",
)
#: Float settings that must be finite and > 0, and those that must be finite and >= 0.
POSITIVE = ("learning_rate", "critic_learning_rate", "temperature", "eval_temperature")
NON_NEGATIVE = ("ent_coef", "kl_coef", "vf_clip", "shared_vf_coef", "max_grad_norm")


def flag(name: str) -> str:
    """``--flag-name`` of a field name."""
    return "--" + name.replace("_", "-")


def check_range(args: Any, names: Sequence[str], low: float, strict: bool = False) -> list[str]:
    """Messages for the fields of ``args`` that are not finite numbers above ``low``."""
    problems = []
    for name in names:
        value = getattr(args, name)
        if value is None:
            continue
        bad = not math.isfinite(value) or (value <= low if strict else value < low)
        if bad:
            relation = ">" if strict else ">="
            problems.append(f"{flag(name)} must be a finite number {relation} {low:g}, got {value}")
    return problems


def check_unit_interval(args: Any, names: Sequence[str]) -> list[str]:
    """Messages for the fields of ``args`` outside ``[0, 1]`` (discounts, lambdas)."""
    return [
        f"{flag(name)} must be in [0, 1], got {getattr(args, name)}"
        for name in names
        if not 0.0 <= getattr(args, name) <= 1.0  # NaN fails too
    ]


def validate(algorithm: Algorithm) -> list[str]:
    """Every problem with the settings, one message each, before any work is done."""
    args = algorithm.args
    problems = check_range(args, AT_LEAST_ONE, 1) + check_range(args, AT_LEAST_ZERO, 0)
    problems += check_range(args, POSITIVE, 0, strict=True) + check_range(args, NON_NEGATIVE, 0)
    problems += check_range(args, ("clip_coef",), 0, strict=True)
    problems += check_range(args, ("dual_clip",), 1, strict=True)
    if args.threads is not None and args.threads < 1:
        problems.append(f"--threads must be >= 1, got {args.threads}")
    if args.group_size >= 1 and args.num_envs % args.group_size:
        problems.append(
            f"--num-envs ({args.num_envs}) must be a multiple of --group-size ({args.group_size})"
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    if world_size > 1 and args.num_envs % (world_size * max(args.group_size, 1)):
        problems.append(
            f"--num-envs ({args.num_envs}) must be a multiple of {world_size} processes x "
            f"--group-size ({args.group_size})"
        )
    if args.env_backend == "ray" and args.env_workers < 1:
        problems.append("--env-backend ray runs the envs in Ray actors: give --env-workers >= 1")
    if args.ray_address is not None and args.env_backend != "ray":
        problems.append("--ray-address needs --env-backend ray")
    if args.vllm_sleep_level not in (0, 1, 2):
        problems.append(f"--vllm-sleep-level must be 0, 1 or 2, got {args.vllm_sleep_level}")
    if args.rollout_backend == "vllm" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        problems.append("--rollout-backend vllm runs one engine in one process: not with torchrun")
    if args.prompt_style not in PROMPT_STYLES:
        problems.append(f"--prompt-style must be one of {PROMPT_STYLES}")
    problems += device_problems(args.device)
    if args.env_id not in gym.registry:
        known = ", ".join(sorted(k for k in gym.registry if k.startswith("HiPER")))
        problems.append(f"--env-id {args.env_id}: not a registered env (known: {known})")
    problems += model_problems(args.model) + data_dir_problems(args.data_dir)
    problems += output_problems(args)
    return problems + algorithm.validate()


def data_dir_problems(data_dir: str | None) -> list[str]:
    """A message if ``--data-dir`` is given and is not a directory (its contents the env checks)."""
    if data_dir is None or Path(data_dir).expanduser().is_dir():
        return []
    return [f"--data-dir {data_dir}: not a directory"]


def device_problems(device: str) -> list[str]:
    """A message if ``device`` is not a torch device this machine has."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return [f"--device {device}: not a device (use cpu, cuda or cuda:N)"]
    if parsed.type == "cuda" and not torch.cuda.is_available():
        return [f"--device {device}: CUDA is not available on this machine"]
    if parsed.type not in ("cpu", "cuda"):
        return [f"--device {device}: only cpu and cuda are supported"]
    return []


def model_problems(model: str) -> list[str]:
    """A message if ``model`` looks like a local path that holds no model."""
    if is_config_only(model):
        return []
    path = Path(model).expanduser()
    looks_local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if not looks_local:
        return []  # a Hub name: loaded from the local cache
    if not path.is_dir():
        return [f"--model {model}: no such model directory"]
    if not (path / "config.json").is_file():
        return [f"--model {model}: no config.json in that directory (not a saved model)"]
    return []


def output_problems(args: TrainArgs) -> list[str]:
    """A message if the run directory cannot be written."""
    if args.resume is not None:
        return []
    directory = Path(args.output_dir)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return [f"--output-dir {args.output_dir}: cannot create or write there"]
    return []


# ---------------------------------------------------------------------------------------------
# Learner state
# ---------------------------------------------------------------------------------------------


@dataclass
class Learner:
    """Everything an iteration reads and updates."""

    algorithm: Algorithm
    tokenizer: Any
    models: Models
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer | None
    grammar: ResponseGrammar | None
    envs: list[gym.Env] | EnvRunner
    probe_env: gym.Env  # on the training split: counts its games, maps games to reset options
    slots: list[list[int]]  # games each group plays
    game_rng: np.random.Generator
    iteration: int = 0
    episodes_done: int = 0
    env_steps: int = 0  # turns played in training episodes (all ranks)
    ranks: Ranks = field(default_factory=Ranks)
    device: str = "cpu"  # this rank's device
    update_module: torch.nn.Module | None = None  # DDP over the trainable networks (ranks > 1)
    sampler: Sampler | None = None  # --rollout-backend's; None: the actor's generate

    @property
    def args(self) -> Any:
        """The algorithm's settings."""
        return self.algorithm.args


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CleanRL's "TRY NOT TO MODIFY: seeding")."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_learner(algorithm: Algorithm, tokenizer_dir: Path | None = None) -> Learner:
    """Envs, tokenizer, models and optimizers, deterministically from ``args.seed``."""
    args = algorithm.args
    ranks = distributed.init_ranks(args.device)
    device = distributed.rank_device(args.device, ranks)
    seed_everything(args.seed)  # the same initial weights on every rank
    if args.threads:
        torch.set_num_threads(args.threads)
    local_envs = args.num_envs // ranks.world_size
    make_env = env_factory(
        args.env_id,
        split=args.train_split,
        **env_settings(args),
    )
    probe_env = make_env()
    eval_probe = eval_envs(args, 1)  # built now: a bad --eval-split fails before training
    if tokenizer_dir is not None:
        tokenizer = load_tokenizer(args.model, tokenizer_dir)
    elif is_config_only(args.model):
        tokenizer = build_env_tokenizer([probe_env] + eval_probe)
    else:
        tokenizer = load_tokenizer(args.model)
    for env in eval_probe:
        env.close()
    envs: list[gym.Env] | EnvRunner
    if args.env_workers:  # started first: the workers build their envs while the models load
        envs = make_env_runner(
            args.env_backend, make_env, local_envs, tokenizer, args.env_workers, args.ray_address
        )
    else:
        envs = [probe_env] + [make_env() for _ in range(local_envs - 1)]
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
        critic=args.critic if algorithm.value_heads else "none",
        value_heads=max(algorithm.value_heads, 1),
        dtype=torch.bfloat16 if args.dtype == "bfloat16" else torch.float32,
        device=device,
        gradient_checkpointing=args.gradient_checkpointing,
        lora=args.lora,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        with_reference=args.kl_coef > 0,
        pad_token_id=tokenizer.pad_token_id,
    )
    actor_optimizer, critic_optimizer = build_optimizers(args, models)
    grammar = None
    if args.constrained_decoding:
        grammar = ResponseGrammar.from_tokenizer(
            tokenizer,
            models.actor.get_output_embeddings().weight.shape[0],
            args.max_subgoal_tokens,
            max_query_tokens=args.max_query_tokens,
            **({"style": args.response_format} if args.response_format != "plan_execute" else {}),
        )
    learner = Learner(
        algorithm=algorithm,
        tokenizer=tokenizer,
        models=models,
        actor_optimizer=actor_optimizer,
        critic_optimizer=critic_optimizer,
        grammar=grammar,
        envs=envs,
        probe_env=probe_env,
        slots=slot_games(args.num_envs // args.group_size, num_games(probe_env)),
        game_rng=np.random.default_rng(args.seed),
        ranks=ranks,
        device=device,
    )
    learner.update_module = distributed.wrap_for_update(
        ranks,
        {"actor": models.actor, "value_head": models.value_head, "critic": models.critic},
        functools.partial(update_forward, learner),
    )
    learner.sampler = make_sampler(
        args.rollout_backend, models.actor, tokenizer, **sampler_settings(args)
    )
    return learner


def sampler_settings(args: TrainArgs) -> dict[str, Any]:
    """The engine settings of ``--rollout-backend`` (none for ``hf``)."""
    if args.rollout_backend != "vllm":
        return {}
    return {
        "max_model_len": args.max_prompt_tokens + args.max_response_tokens,
        "max_num_seqs": args.num_envs,  # a rollout's batch, or an evaluation's
        "gpu_memory_utilization": args.vllm_gpu_memory_utilization,
        "sleep_level": args.vllm_sleep_level,
        "seed": args.seed,
    }


def build_optimizers(
    args: TrainArgs, models: Models
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """AdamW for the actor (with a shared value head) and, if separate, the critic."""
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
            models.critic.parameters(), lr=args.critic_learning_rate, weight_decay=args.weight_decay
        )
    return actor_optimizer, critic_optimizer


def eval_split(args: TrainArgs) -> str | None:
    """The evaluation split, with ``held-out`` resolved for the env."""
    if args.eval_split != "held-out":
        return args.eval_split
    return held_out_split(args.env_id)


def eval_envs(args: TrainArgs, count: int, split: str | None = None) -> list[Any]:
    """Envs on the evaluation split (or ``split``); none when it is the training split."""
    split = eval_split(args) if split is None else split
    if split is None or split == args.train_split:
        return []
    return make_envs(
        args.env_id,
        count,
        split=split,
        **env_settings(args),
    )


def close_learner_envs(learner: Learner) -> None:
    """Close the training envs (stopping env workers) and the probe env."""
    close_envs(learner.envs)
    if isinstance(learner.envs, EnvRunner):  # the probe env is not one of the runner's
        learner.probe_env.close()
    if learner.sampler is not None:
        learner.sampler.close()


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
    return batch.to(learner.device)


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive chunks of ``items`` of at most ``size``."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def forward_values(learner: Learner, batch: TurnBatch, shared_values: Any) -> torch.Tensor | None:
    """The critic's values of ``batch`` (from the shared head's output, or the critic LM)."""
    if learner.algorithm.value_heads == 0:
        return None
    if learner.models.critic is None:
        return shared_values
    return critic_forward(learner.models.critic, batch, learner.algorithm.read_values)


def score_turns(learner: Learner, turns: Sequence[Turn]) -> dict[str, list[torch.Tensor]]:
    """Old log-probs, reference log-probs and values of every turn (no gradients).

    Returns per-turn lists: ``old_log_probs`` and ``ref_log_probs`` (``[len(response)]``) and
    ``values`` (the algorithm's :meth:`~Algorithm.turn_values`; empty when critic-free). With
    several ranks, each scores a contiguous share of the turns and the shares are gathered.
    """
    ranks = learner.ranks
    if not ranks.distributed:
        return score_share(learner, turns)
    size = -(-len(turns) // ranks.world_size)
    share = score_share(learner, turns[ranks.rank * size : (ranks.rank + 1) * size])
    scored: dict[str, list[torch.Tensor]] = {key: [] for key in share}
    for part in distributed.gather(ranks, share):
        for key, rows in part.items():
            scored[key].extend(rows)
    return scored


@torch.no_grad()
def score_share(learner: Learner, turns: Sequence[Turn]) -> dict[str, list[torch.Tensor]]:
    """:func:`score_turns` of the turns this process scores."""
    args, models, algorithm = learner.args, learner.models, learner.algorithm
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
            read_values=algorithm.read_values,
            with_entropy=False,
        )
        values = forward_values(learner, batch, output.values)
        reference = reference_log_probs(learner, batch)
        for row, turn in enumerate(micro):
            length = len(turn.response_ids)
            scored["old_log_probs"].append(output.log_probs[row, :length].float().cpu())
            if reference is not None:
                scored["ref_log_probs"].append(reference[row, :length].float().cpu())
            if values is not None:
                scored["values"].append(algorithm.turn_values(values[row].float().cpu(), length))
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
# One iteration: rollout -> scores -> advantages -> PPO update
# ---------------------------------------------------------------------------------------------


def run_rollout(learner: Learner) -> Rollout:
    """One episode per env at the training temperature, in groups of ``group_size``.

    Each group draws one game and one reset seed; its ``group_size`` envs play that game with
    that seed (with ``group_size=1`` this is one game per env, as before groups existed). With
    several ranks every rank draws the same games, plays its contiguous share of them, and the
    shares are gathered, so every rank holds the whole batch in rank order.
    """
    args, ranks = learner.args, learner.ranks
    size = args.group_size
    games = draw_games(learner.game_rng, learner.slots)
    seeds = learner.game_rng.integers(2**31 - 1, size=len(games)).tolist()
    options = [reset_options_for(learner.probe_env, g) for g in games for _ in range(size)]
    group_ids = [learner.episodes_done // size + g for g in range(len(games)) for _ in range(size)]
    reset_seeds = [seed for seed in seeds for _ in range(size)]
    mine = ranks.shard(len(options))
    if ranks.distributed:  # each rank samples differently, and the same on every resume
        torch.manual_seed(distributed.sampling_seed(args.seed, learner.iteration, ranks.rank))
    learner.models.actor.eval()
    rollout = collect_rollout(
        learner.envs,
        learner.sampler or learner.models.actor,
        learner.tokenizer,
        reset_options=options[mine],
        reset_seeds=reset_seeds[mine],
        group_ids=group_ids[mine],
        max_turns=args.max_turns,
        temperature=args.temperature,
        max_prompt_tokens=args.max_prompt_tokens,
        max_response_tokens=args.max_response_tokens,
        reward_scale=args.reward_scale,
        grammar=learner.grammar,
        first_episode_id=learner.episodes_done + mine.start,
    )
    if ranks.distributed:
        rollout = merge_rollouts(distributed.gather(ranks, rollout))
    learner.episodes_done += len(rollout.episodes)
    learner.env_steps += len(rollout.turns)
    return rollout


def merge_rollouts(parts: Sequence[Rollout]) -> Rollout:
    """The ranks' rollouts as one, in rank order (the times are this process's own)."""
    return Rollout(
        turns=[turn for part in parts for turn in part.turns],
        episodes=[episode for part in parts for episode in part.episodes],
        times=parts[0].times,
    )


@dataclass
class UpdateData:
    """Per-turn training data of one iteration (CPU tensors, padded to the longest response)."""

    targets: Targets
    old_log_probs: torch.Tensor  # [N, R]
    ref_log_probs: torch.Tensor | None  # [N, R]
    old_values: torch.Tensor | None  # [N, K]


def update_data(
    turns: Sequence[Turn], scored: dict[str, list[torch.Tensor]], targets: Targets
) -> UpdateData:
    """The algorithm's targets with the scored log-probs and values, padded to one length."""
    length = max(len(turn.response_ids) for turn in turns)
    return UpdateData(
        targets=targets,
        old_log_probs=pad_rows(scored["old_log_probs"], length),
        ref_log_probs=pad_rows(scored["ref_log_probs"], length)
        if scored["ref_log_probs"]
        else None,
        old_values=stacked_values(scored),
    )


def stacked_values(scored: dict[str, list[torch.Tensor]]) -> torch.Tensor | None:
    """The scored values as one ``[N, K]`` tensor (padded), or ``None`` when critic-free."""
    if not scored["values"]:
        return None
    return pad_rows(scored["values"], max(v.shape[0] for v in scored["values"]))


def ppo_update(learner: Learner, turns: Sequence[Turn], data: UpdateData) -> dict[str, float]:
    """PPO epochs over shuffled minibatches of turns; returns mean loss statistics."""
    args, models = learner.args, learner.models
    models.actor.train()
    if models.critic is not None:
        models.critic.train()
    ranks = learner.ranks
    stats: dict[str, list[float]] = {}
    for _ in range(args.update_epochs):
        order = distributed.from_main(ranks, torch.randperm(len(turns)).tolist())
        for minibatch in chunks(order, args.minibatch_size):
            learner.actor_optimizer.zero_grad(set_to_none=True)
            if learner.critic_optimizer is not None:
                learner.critic_optimizer.zero_grad(set_to_none=True)
            micros = distributed.split_minibatch(ranks, minibatch, args.micro_batch_size)
            for index, micro in enumerate(micros):
                # token-mean per micro-batch, as verl; DDP averages over the ranks, so each
                # rank's share counts world_size times (an empty share is a zero-weight step)
                weight = len(micro) / len(minibatch) * ranks.world_size
                with distributed.no_sync_unless(learner.update_module, index == len(micros) - 1):
                    step_stats = micro_step(learner, turns, data, micro or minibatch[:1], weight)
                if micro:
                    for key, value in step_stats.items():
                        stats.setdefault(key, []).append(value)
            step_optimizers(learner, stats)
    return {key: float(np.mean(values)) for key, values in stats.items()}


def step_optimizers(learner: Learner, stats: dict[str, list[float]]) -> None:
    """Clip the gradients, record their norms, and step the optimizers."""
    args, models = learner.args, learner.models
    actor_params = [p for group in learner.actor_optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(actor_params, args.max_grad_norm)
    stats.setdefault("losses/actor_grad_norm", []).append(float(grad_norm))
    learner.actor_optimizer.step()
    if learner.critic_optimizer is not None and models.critic is not None:
        critic_norm = torch.nn.utils.clip_grad_norm_(models.critic.parameters(), args.max_grad_norm)
        stats.setdefault("losses/critic_grad_norm", []).append(float(critic_norm))
        learner.critic_optimizer.step()


def micro_step(
    learner: Learner,
    turns: Sequence[Turn],
    data: UpdateData,
    indices: list[int],
    weight: float,
) -> dict[str, float]:
    """Forward and backward of one micro-batch (gradients accumulate)."""
    args, device = learner.args, learner.device
    algorithm, targets = learner.algorithm, data.targets
    batch = make_batch(learner, [turns[i] for i in indices])
    length = batch.response_length
    advantages = targets.token_advantages[indices, :length].to(device)
    mask = targets.loss_mask[indices, :length].to(device) & batch.response_mask.bool()
    forward = learner.update_module or functools.partial(update_forward, learner)
    log_probs, entropy, values = forward(batch)
    ref_log_probs = None
    if data.ref_log_probs is not None:
        ref_log_probs = data.ref_log_probs[indices, :length].to(device)
    loss, actor_stats = losses.actor_loss(
        log_probs,
        data.old_log_probs[indices, :length].to(device),
        advantages,
        mask,
        entropy=entropy,
        ref_log_prob=ref_log_probs,
        clip_eps=args.clip_coef,
        dual_clip=args.dual_clip,
        entropy_coef=args.ent_coef,
        kl_coef=args.kl_coef,
    )
    stats = {f"losses/{key}": float(value) for key, value in actor_stats.items()}
    if values is not None:
        assert data.old_values is not None and targets.returns is not None
        assert targets.value_mask is not None
        width = values.shape[1]
        value_loss, value_stats = algorithm.value_loss(
            values,
            data.old_values[indices, :width].to(device),
            targets.returns[indices, :width].to(device),
            targets.value_mask[indices, :width].to(device),
        )
        # heads on the actor share its backbone: the value loss is weighted in; a separate
        # critic shares no parameter with the actor, so one backward of the sum gives each
        # network exactly its own loss's gradient
        coef = args.shared_vf_coef if learner.models.critic is None else 1.0
        loss = loss + coef * value_loss
        stats.update({f"losses/{key}": float(value) for key, value in value_stats.items()})
        stats["losses/value_loss"] = float(value_loss.detach())
    (weight * loss).backward()
    return stats


def update_forward(
    learner: Learner, batch: TurnBatch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs, entropy and values of a micro-batch, with gradients (DDP wraps this)."""
    output = policy_forward(
        learner.models.actor,
        batch,
        temperature=learner.args.temperature,
        value_head=learner.models.value_head,
        read_values=learner.algorithm.read_values,
    )
    return output.log_probs, output.entropy, forward_values(learner, batch, output.values)


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
    """One iteration of any algorithm; returns its metrics (including the time split)."""
    algorithm = learner.algorithm
    start = time.perf_counter()

    # 1. ROLLOUT
    rollout = run_rollout(learner)
    if learner.sampler is not None:  # vLLM's memory back to training (--vllm-sleep-level)
        learner.sampler.sleep()
    rollout_done = time.perf_counter()

    # 2. OLD / REFERENCE LOG-PROBS AND VALUES
    scored = score_turns(learner, rollout.turns)
    values = stacked_values(scored)
    scored_done = time.perf_counter()

    # 3. ADVANTAGES (the algorithm's estimator)
    targets = algorithm.targets(rollout, values)
    data = update_data(rollout.turns, scored, targets)
    estimated = time.perf_counter()

    # 4. PPO UPDATE (a Ctrl-C here is acted on after the iteration, see train_loop)
    with defer_interrupts:
        update_stats = ppo_update(learner, rollout.turns, data)
        if learner.sampler is not None:  # the engine samples the next rollout from the update
            learner.sampler.sync_weights(learner.models.actor)
    end = time.perf_counter()

    metrics = rollout_metrics(rollout)
    metrics.update(algorithm.rollout_metrics(rollout))
    metrics.update(targets.metrics)
    metrics.update(update_stats)
    metrics.update(
        {
            "time/rollout_generation": rollout.times.generation,
            "time/env": rollout.times.env,
            "time/bookkeeping": rollout.times.bookkeeping,
            "time/env_in_workers": rollout.times.in_workers,
            "time/scoring": scored_done - rollout_done,
            "time/advantages": estimated - scored_done,
            "time/update": end - estimated,  # with the weight push
            "time/iteration": end - start,
            "time/turns_per_second": len(rollout.turns) / max(end - start, 1e-9),
            "turns": float(len(rollout.turns)),
            "response_tokens": float(sum(len(turn.response_ids) for turn in rollout.turns)),
        }
    )
    return metrics


class DeferredInterrupt:
    """A guard under which Ctrl-C is only remembered (``pending``): the update, and saves.

    The train loop acts on it once the guarded work is complete, so a checkpoint never holds a
    half-applied update and a save is never cut short; ``updating`` tells whether the guarded
    work was cut short by an error.
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
        "algorithm": learner.algorithm.name,
        "config": dataclasses.asdict(learner.args),
        "run_dir": str(run_dir),
        "iteration": learner.iteration,
        "episodes_done": learner.episodes_done,
        "env_steps": learner.env_steps,
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
    learner.env_steps = int(state.get("env_steps", 0))
    restore_rng_state(state["rng"], learner.game_rng)


def algorithm_from_state(state: dict[str, Any], **overrides: Any) -> Algorithm:
    """The algorithm and settings a checkpoint was trained with (HiPER for older ones)."""
    algorithm_class = load_algorithm(state.get("algorithm", DEFAULT_ALGORITHM))
    known = {f.name for f in dataclasses.fields(algorithm_class.args_class)}
    config = {key: value for key, value in state["config"].items() if key in known}
    return algorithm_class(dataclasses.replace(algorithm_class.args_class(**config), **overrides))


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

METRIC_COLUMNS = [
    "iteration",
    "episodes",
    "env_steps",
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
]
TIME_COLUMNS = [
    "time/rollout_generation",
    "time/env",
    "time/bookkeeping",
    "time/env_in_workers",
    "time/scoring",
    "time/advantages",
    "time/update",
    "time/iteration",
    "time/turns_per_second",
    "time/elapsed",
]


def resolve_run(algorithm: Algorithm) -> tuple[Algorithm, Path, dict[str, Any] | None]:
    """The effective algorithm settings, the run directory and, on resume, the checkpoint."""
    args = algorithm.args
    if args.resume is None:
        run_name = args.run_name or (
            f"{args.exp_name}__{args.env_id}__{args.seed}__{int(time.time())}"
        )
        return algorithm, Path(args.output_dir) / run_name, None
    directory, state = load_checkpoint(args.resume)
    if state.get("algorithm", DEFAULT_ALGORITHM) != algorithm.name:
        raise ValueError(
            f"{args.resume} is a {state.get('algorithm', DEFAULT_ALGORITHM)} run; resume it with "
            f"`hiper-gym train {state.get('algorithm', DEFAULT_ALGORITHM)} --resume ...`"
        )
    resumed = algorithm_from_state(
        state,
        resume=str(directory),
        num_iterations=args.num_iterations,
        progress=args.progress,
        tensorboard=args.tensorboard,
    )
    # checkpoints live in <run>/checkpoints/iter_N: the run is found even if it was moved
    return resumed, directory.parent.parent, state


def split_algorithm(argv: Sequence[str]) -> tuple[str, list[str]]:
    """``[ALGO] rest...`` -> (algorithm name, rest); the default algorithm when omitted."""
    argv = list(argv)
    if argv and argv[0] in ALGORITHMS:
        return argv[0], argv[1:]
    return DEFAULT_ALGORITHM, argv


def main(argv: Sequence[str] | None = None) -> int:
    """``hiper-gym train [ALGO] [PRESET] [--flags]``; returns the exit status."""
    name, rest = split_algorithm(sys.argv[1:] if argv is None else argv)
    algorithm_class = load_algorithm(name)
    return run_training(algorithm_class(parse_args(algorithm_class, rest)))


def fail(message: str) -> int:
    """Print a usage error the way argparse and tyro do, and return their exit status 2."""
    print(f"hiper-gym train: {message}", file=sys.stderr)
    return 2


def run_training(algorithm: Algorithm) -> int:
    """Validate, build (or resume) the learner, and run the train loop."""
    problems = validate(algorithm)
    if problems:
        return fail("\n  ".join(["invalid settings:", *problems]))
    ranks = distributed.init_ranks(algorithm.args.device)
    try:
        algorithm, run_dir, state = resolve_run(algorithm)
    except (FileNotFoundError, ValueError) as error:
        return fail(str(error))
    run_dir = distributed.from_main(ranks, run_dir)  # one run directory, named by rank 0
    if state is None and wants_base_policy(algorithm.args):
        status, base = make_base_policy(algorithm.args, run_dir, ranks)
        if status != 0:
            return status
        algorithm.args = dataclasses.replace(algorithm.args, model=str(base))
    tokenizer_dir = Path(algorithm.args.resume) / TOKENIZER_DIR if state is not None else None
    try:
        learner = build_learner(algorithm, tokenizer_dir)
    except DataError as error:  # e.g. a --data-dir without the split's games
        return fail(str(error))
    if state is not None:
        restore_learner(learner, state)
        if learner.sampler is not None:  # the engine started from the initial weights
            learner.sampler.sync_weights(learner.models.actor)
    logger = open_logger(learner, run_dir, resumed=state is not None)
    try:
        return train_loop(learner, logger, run_dir)
    finally:
        logger.close()
        close_learner_envs(learner)
        distributed.destroy(ranks)


#: The settings a base policy shares with the run it starts (``hiper-gym sft`` has each of them).
BASE_POLICY_SETTINGS = (
    "seed",
    "device",
    "threads",
    "progress",
    "env_id",
    "data_dir",
    "train_split",
    "history_length",
    "prompt_style",
    "response_format",
    "max_turns",
    "model",
    "tiny_hidden_size",
    "tiny_layers",
    "tiny_heads",
    "tiny_kv_heads",
    "tiny_intermediate_size",
    "dtype",
    "max_prompt_tokens",
    "max_response_tokens",
    "constrained_decoding",
    "max_subgoal_tokens",
    "max_query_tokens",
)


def wants_base_policy(args: TrainArgs) -> bool:
    """Whether a new run first clones its base policy (``--base-policy``)."""
    if args.base_policy == "auto":
        return is_config_only(args.model)
    return args.base_policy == "sft"


def make_base_policy(args: TrainArgs, run_dir: Path, ranks: Ranks) -> tuple[int, Path]:
    """Behaviour-clone the base policy into ``<run>/base`` (rank 0).

    Returns ``hiper-gym sft``'s exit status (0, 130 when interrupted, 2 when, e.g., the expert won
    no episode within ``--max-turns``) and the model directory.

    The base sees exactly the prompts, response format and grammar of the run (the shared
    settings above), so the run starts from the policy the demonstrations made.
    """
    from hiper_gym.agents import sft

    model_dir = run_dir / "base" / "model"
    if ranks.is_main:
        argv = as_flags(args, BASE_POLICY_SETTINGS)
        argv += ["--output-dir", str(run_dir), "--run-name", "base", "--eval-episodes", "0"]
        argv += ["--max-steps", str(args.base_sft_steps)]
        if env_family(args.env_id) == "alfworld":  # renaming is ALFWorld's (see the field)
            argv += ["--rename-copies", str(args.base_rename_copies)]
        if args.base_demo_episodes is not None:
            argv += ["--demo-episodes", str(args.base_demo_episodes)]
        print(f"base policy: behaviour cloning into {model_dir.parent}", flush=True)
        status = sft.main(argv)
        if status != 0:
            return status, model_dir
    distributed.barrier(ranks)
    return 0, model_dir


def as_flags(args: Any, names: Sequence[str]) -> list[str]:
    """``args``' values of ``names`` as command-line flags (tyro's spelling for booleans)."""
    flags = []
    for name in names:
        value = getattr(args, name)
        if isinstance(value, bool):
            flags.append(flag(name) if value else "--no-" + name.replace("_", "-"))
        else:
            flags.append(f"{flag(name)}={value}")  # None is spelt None, as tyro reads it
    return flags


def open_logger(learner: Learner, run_dir: Path, resumed: bool) -> RunLogger | QuietLogger:
    """Rank 0 writes the run directory's config and logs; the other ranks log nothing."""
    if not learner.ranks.is_main:
        return QuietLogger(run_dir)
    algorithm = learner.algorithm
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(
        json.dumps({"algorithm": algorithm.name, **dataclasses.asdict(algorithm.args)}, indent=2)
    )
    logger = RunLogger(
        run_dir,
        METRIC_COLUMNS + algorithm.metric_columns + TIME_COLUMNS,
        resume_after=learner.iteration if resumed else None,
        tensorboard=algorithm.args.tensorboard,
    )
    print(f"run directory: {run_dir}", flush=True)
    return logger


@dataclass
class Snapshot:
    """What a checkpoint of the last completed iteration restores besides the weights."""

    rng: dict[str, Any]
    episodes_done: int
    env_steps: int

    @classmethod
    def of(cls, learner: Learner) -> Snapshot:
        """The learner's random states and counters now."""
        return cls(rng_state(learner.game_rng), learner.episodes_done, learner.env_steps)


def train_loop(learner: Learner, logger: RunLogger | QuietLogger, run_dir: Path) -> int:
    """Iterate until ``num_iterations``; checkpoint periodically, at the end and on Ctrl-C.

    No completed iteration is ever lost: an interrupt or error anywhere (a rollout, an
    evaluation, a save, the final evaluation) saves the last completed iteration, and the last
    iteration is saved before the final evaluation starts.
    """
    args, main_rank = learner.args, learner.ranks.is_main
    checkpoint_root = run_dir / "checkpoints"
    progress = make_progress(learner) if main_rank else None
    started = time.perf_counter()
    defer = DeferredInterrupt()
    snapshot = Snapshot.of(learner)
    saved_iteration = -1
    unlogged: dict[str, float] | None = None  # a completed iteration's row not yet written
    try:
        while learner.iteration < args.num_iterations:
            unlogged = train_iteration(learner, defer)
            learner.iteration += 1
            snapshot = Snapshot.of(learner)
            unlogged["episodes"] = learner.episodes_done
            unlogged["env_steps"] = learner.env_steps
            # the final evaluation covers the last iteration: no periodic one there too
            periodic = args.eval_every and learner.iteration % args.eval_every == 0
            if main_rank and periodic and learner.iteration < args.num_iterations:
                unlogged["eval/success"] = evaluate_and_log(learner, logger)["success"]
            unlogged["time/elapsed"] = time.perf_counter() - started
            logger.log(learner.iteration, unlogged)
            if main_rank:
                update_progress(progress, learner.algorithm.name, unlogged)
            unlogged = None
            if learner.iteration % args.checkpoint_every == 0:
                saved_iteration = guarded_save(learner, checkpoint_root, snapshot, run_dir, defer)
            if defer.pending:  # Ctrl-C arrived during the update or a save
                raise KeyboardInterrupt
        if saved_iteration != learner.iteration:
            saved_iteration = guarded_save(learner, checkpoint_root, snapshot, run_dir, defer)
        if not main_rank:
            return 0
        final = final_evaluation(learner, logger)
    except KeyboardInterrupt:
        directory = save_last_completed(learner, logger, checkpoint_root, snapshot, unlogged, defer)
        print(f"\ninterrupted: checkpoint saved to {directory}", file=sys.stderr)
        return 130
    except Exception:
        # an env or model failure: checkpoint the last completed iteration, unless the update
        # was under way (its weights are then neither the old nor the new ones)
        if defer.updating:
            raise
        directory = save_last_completed(learner, logger, checkpoint_root, snapshot, unlogged, defer)
        print(f"\nfailed: checkpoint of the last iteration saved to {directory}", file=sys.stderr)
        raise
    finally:
        if progress is not None:
            progress.close()
    (run_dir / FINAL_EVAL_FILE).write_text(json.dumps(final, indent=2) + "\n")
    plot_learning_curve(run_dir / "metrics.csv", run_dir / CURVE_FILE, title=run_dir.name)
    print(f"done: {run_dir}")
    return 0


def save_last_completed(
    learner: Learner,
    logger: RunLogger | QuietLogger,
    root: Path,
    snapshot: Snapshot,
    unlogged: dict[str, float] | None,
    defer: DeferredInterrupt,
) -> Path:
    """Checkpoint the last completed iteration after an interrupt or an error.

    The weights are those of the last completed iteration (an interrupted rollout or
    evaluation changed no weights); the counters are rolled back to it too, and its metrics
    row is written if an evaluation cut in before it was.
    """
    learner.episodes_done, learner.env_steps = snapshot.episodes_done, snapshot.env_steps
    if unlogged is not None and learner.iteration > 0 and "episodes" in unlogged:
        logger.log(learner.iteration, unlogged)
    guarded_save(learner, root, snapshot, logger.run_dir, defer)
    return root / f"iter_{learner.iteration:06d}"


def guarded_save(
    learner: Learner, root: Path, snapshot: Snapshot, run_dir: Path, defer: DeferredInterrupt
) -> int:
    """Save under the interrupt guard (a Ctrl-C waits for the save); returns the iteration.

    Only rank 0 writes; the weights and counters are the same on every rank.
    """
    if not learner.ranks.is_main:
        return learner.iteration
    with defer:
        directory = save_checkpoint(
            root,
            learner.iteration,
            learner_state(learner, snapshot.rng, run_dir),
            learner.tokenizer,
        )
    if (run_dir / "metrics.csv").exists():
        plot_learning_curve(run_dir / "metrics.csv", run_dir / CURVE_FILE, title=run_dir.name)
    assert directory.name == f"iter_{learner.iteration:06d}"
    return learner.iteration


def evaluate_and_log(learner: Learner, logger: RunLogger) -> dict[str, Any]:
    """Evaluate on the evaluation split (sampled, and greedy with ``--eval-greedy``); log both.

    Returns the sampled evaluation's summary.
    """
    args = learner.args
    split = eval_split(args) or "default"
    modes = [("sampled", args.eval_temperature)] + ([("greedy", 0.0)] if args.eval_greedy else [])
    summaries = {}
    for mode, temperature in modes:
        summaries[mode] = run_evaluation(learner, temperature=temperature)
        position = {
            "iteration": learner.iteration,
            "episodes": learner.episodes_done,
            "env_steps": learner.env_steps,
            "split": split,
            "mode": mode,
        }
        logger.log_evaluation(position, summaries[mode])
    return {**summaries["sampled"], "split": split, "modes": list(summaries)}


def final_evaluation(learner: Learner, logger: RunLogger) -> dict[str, Any]:
    """The held-out evaluation (logged like the periodic ones), the training games beside it."""
    args = learner.args
    final = evaluate_and_log(learner, logger)
    print(success_summary(final, title=f"final evaluation ({final['split']} split)"))
    if eval_split(args) != args.train_split:
        final["train_games"] = run_evaluation(learner, split=args.train_split)
        title = f"the same policy on the training games ({args.train_split} split)"
        print(success_summary(final["train_games"], title=title))
    return final


def run_evaluation(
    learner: Learner, *, temperature: float | None = None, split: str | None = None
) -> dict[str, Any]:
    """Evaluate the current policy on a split (default: the evaluation split).

    Samples at ``eval_temperature`` unless ``temperature`` is given (0: greedy). The random
    states are restored afterwards, so evaluating does not change the training run (a resumed
    run, which does not replay evaluations, stays identical).
    """
    args = learner.args
    held_out = eval_envs(args, args.num_envs, split)
    envs = held_out or learner.envs
    probe_env = held_out[0] if held_out else learner.probe_env
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            return evaluate_policy(
                envs,
                learner.sampler or learner.models.actor,
                learner.tokenizer,
                num_episodes=args.eval_episodes,
                max_turns=args.max_turns,
                temperature=args.eval_temperature if temperature is None else temperature,
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


def make_progress(learner: Learner) -> Any:
    """A tqdm bar over iterations, or ``None`` when ``--no-progress``."""
    if not learner.args.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=learner.args.num_iterations,
        initial=learner.iteration,
        desc=learner.algorithm.name,
        unit="it",
        dynamic_ncols=True,
    )


def update_progress(progress: Any, name: str, metrics: dict[str, float]) -> None:
    """Show success, return, switch rate and mean segment length on the bar."""
    summary = (
        f"{int(metrics.get('episodes', 0))} episodes | success {metrics['train/success']:.2f} "
        f"return {metrics['train/return']:.2f} switch {metrics['train/switch_rate']:.2f} "
        f"seg {metrics['train/segment_length']:.1f} | {metrics['time/iteration']:.1f}s/it"
    )
    if progress is None:
        print(f"{name}: {summary}", flush=True)
        return
    progress.set_postfix_str(summary, refresh=False)
    progress.update(1)


if __name__ == "__main__":
    raise SystemExit(main())
