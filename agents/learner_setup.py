"""Building what a learner needs: environments, the tokenizer, actor, critic and reference model.

Shared by :mod:`hiper_gym.agents.hiper`, :mod:`hiper_gym.agents.evaluate`, the benchmarks and the
baselines, so a checkpoint is rebuilt exactly as it was trained.
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from hiper_gym.agents.env_workers import make_plan_execute_env
from hiper_gym.agents.models import (
    CONFIG_ONLY_MODELS,
    NUM_VALUE_HEADS,
    SharedValueHead,
    TinyShape,
    load_actor,
    load_token_critic,
    model_config,
)
from hiper_gym.agents.tokenizer_builder import build_word_tokenizer
from hiper_gym.wrappers.prompts import PromptTemplate, default_template

#: A short prompt for small models trained from scratch (``--prompt-style compact``): the same
#: fields as the authors' prompt (task, step, history, observation, subgoal, admissible actions)
#: without the instructions a randomly initialised model cannot read anyway.
COMPACT_TEMPLATE = PromptTemplate(
    with_history=(
        "Task: {task}\nStep {current_step}.\n{history}\nObservation: {observation}\n"
        "Subgoal: {current_subgoal}\nActions:\n{admissible_actions}"
    ),
    without_history=(
        "Task: {task}\nObservation: {observation}\nSubgoal: {current_subgoal}\n"
        "Actions:\n{admissible_actions}"
    ),
)

#: ``--prompt-style minimal``: the compact prompt without the admissible-actions list. Under
#: constrained decoding the trie already restricts the action to admissible commands, and the
#: list is most of a prompt's tokens: shorter prompts make every forward and the update faster.
MINIMAL_TEMPLATE = PromptTemplate(
    with_history=(
        "Task: {task}\nStep {current_step}.\n{history}\nObservation: {observation}\n"
        "Subgoal: {current_subgoal}"
    ),
    without_history="Task: {task}\nObservation: {observation}\nSubgoal: {current_subgoal}",
)

#: The ``minimal`` prompt for a flat (``<action>``-only) response: no subgoal line.
MINIMAL_FLAT_TEMPLATE = PromptTemplate(
    with_history="Task: {task}\nStep {current_step}.\n{history}\nObservation: {observation}",
    without_history="Task: {task}\nObservation: {observation}",
)

PROMPT_STYLES: tuple[str, ...] = ("paper", "compact", "minimal")


def prompt_template(
    prompt_style: str, response_format: str = "plan_execute"
) -> PromptTemplate | None:
    """The template of a ``--prompt-style`` (``None``: the wrappers' default, the paper's).

    The ``paper`` wording differs per response format (the wrappers pick it); ``minimal`` drops
    the subgoal line for the flat format, which has no subgoals.
    """
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {prompt_style!r}; expected one of {PROMPT_STYLES}")
    if prompt_style == "minimal" and response_format == "flat":
        return MINIMAL_FLAT_TEMPLATE
    return {"compact": COMPACT_TEMPLATE, "minimal": MINIMAL_TEMPLATE}.get(prompt_style)


def env_factory(
    env_id: str,
    *,
    split: str | None,
    history_length: int,
    prompt_style: str,
    response_format: str = "plan_execute",
    cache_size: int | None = None,
    expert: str | None = None,
    data_dir: str | None = None,
) -> Callable[[], gym.Env]:
    """A picklable function that builds one response-parsing env with prompt observations.

    ``expert`` (ALFWorld's ``"walkthrough"`` or ``"handcoded"``) adds ``info["expert_plan"]``
    without changing the prompts, so demonstrations see what the trainer's envs show.
    ``data_dir`` is the env's real data tree (``None``: its environment variable, else the
    embedded default).
    """
    kwargs: dict[str, Any] = {}
    if split is not None:
        kwargs["split"] = split
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    if cache_size is not None:
        kwargs["cache_size"] = cache_size
    if expert is not None:
        kwargs["expert"] = expert
    return functools.partial(
        make_plan_execute_env,
        env_id,
        history_length=history_length,
        template=prompt_template(prompt_style, response_format),
        style=response_format,
        **kwargs,
    )


#: Each env family's held-out split: ALFWorld's unseen rooms, WebShop's test goals (upstream's).
HELD_OUT_SPLITS = {"alfworld": "valid_unseen", "webshop": "test"}


def env_family(env_id: str | None) -> str:
    """``"webshop"`` for a WebShop env id, else ``"alfworld"`` (the suite's default env)."""
    return "webshop" if "webshop" in (env_id or "").lower() else "alfworld"


def held_out_split(env_id: str | None) -> str:
    """The held-out split of ``env_id``'s family (what ``--eval-split held-out`` means)."""
    return HELD_OUT_SPLITS[env_family(env_id)]


def env_settings(args: Any) -> dict[str, Any]:
    """The :func:`env_factory` settings of a run's arguments (the trainer's, ``sft``'s).

    One place, so the demonstrations, the training envs and every evaluation build the same env.
    """
    return {
        "history_length": args.history_length,
        "prompt_style": args.prompt_style,
        "response_format": args.response_format,
        "data_dir": args.data_dir,
    }


def make_envs(env_id: str, num_envs: int, **settings: Any) -> list[gym.Env]:
    """``num_envs`` envs of :func:`env_factory` (``settings``), as a list: finished envs idle."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    make_env = env_factory(env_id, **settings)
    return [make_env() for _ in range(num_envs)]


def num_games(env: gym.Env) -> int:
    """How many games (ALFWorld) or goals of its split (WebShop) the env has; 0 if unknown."""
    unwrapped = env.unwrapped
    for name in ("game_files", "split_indices"):
        value = getattr(unwrapped, name, None)
        if value is not None:
            return len(value)
    return 0


def reset_options_for(env: gym.Env, game: int | None) -> dict[str, Any] | None:
    """``reset`` options playing the env's ``game``-th game or goal (``None``: the env picks)."""
    if game is None:
        return None
    goal_indices = getattr(env.unwrapped, "split_indices", None)
    if goal_indices is not None:
        return {"goal_index": int(goal_indices[game])}
    return {"game": int(game)}


def slot_games(num_envs: int, total_games: int) -> list[list[int]]:
    """Games each env slot plays: game ``g`` goes to slot ``g % num_envs``.

    Keeping a game on one slot keeps its engine in that env's cache, so resets stay cheap.
    """
    if total_games == 0:
        return [[] for _ in range(num_envs)]
    if num_envs >= total_games:
        return [[slot % total_games] for slot in range(num_envs)]
    return [list(range(slot, total_games, num_envs)) for slot in range(num_envs)]


def draw_games(game_rng: np.random.Generator, slots: Sequence[Sequence[int]]) -> list[int | None]:
    """One game per slot, uniformly from the slot's games (``None`` when games are unknown)."""
    return [None if not games else int(games[game_rng.integers(len(games))]) for games in slots]


def env_texts(
    env: gym.Env, play_episodes: int = 0, play_steps: int = 4, seed: int = 0
) -> list[str]:
    """Text an env can show or accept, for a word-level tokenizer's vocabulary.

    Reads the game files the env lists (ALFWorld's hold every object, receptacle and template
    word), any ``vocabulary_texts()`` the env offers, and the instruction texts of the prompt
    templates; then plays ``play_steps`` random admissible commands in ``play_episodes`` games
    (for envs without game files, e.g. WebShop, whose pages and commands come from a catalogue).
    """
    unwrapped = env.unwrapped
    texts: list[str] = []
    style = env.get_wrapper_attr("style")
    for template in (default_template(env.get_wrapper_attr("flavor"), style), COMPACT_TEMPLATE):
        texts += [template.with_history, template.without_history]
    texts.append("[Observation 1: '...', Action 1: '...']")  # the prompts' history lines
    for path in getattr(unwrapped, "game_files", []) or []:
        texts.append(Path(path).read_text(errors="ignore"))
    vocabulary = getattr(unwrapped, "vocabulary_texts", None)
    if callable(vocabulary):
        texts.extend(vocabulary())
    rng = np.random.default_rng(seed)
    # play the listed games (or, when the env lists none, whatever it resets to)
    for game in range(min(num_games(env) or play_episodes, play_episodes)):
        options = reset_options_for(env, game) if num_games(env) else None
        prompt, info = env.reset(seed=seed + game, options=options)
        texts.append(prompt)
        for _ in range(play_steps):
            commands = list(info.get("admissible_commands", []))
            texts.extend(commands)
            if not commands:
                break
            command = commands[int(rng.integers(len(commands)))]
            prompt, _, terminated, truncated, info = env.step(f"<action>{command}</action>")
            texts.append(prompt)
            if terminated or truncated:
                break
    return texts


def build_env_tokenizer(
    envs: Iterable[gym.Env], play_episodes: int = 16, extra_texts: Iterable[str] = ()
) -> PreTrainedTokenizerBase:
    """A word-level tokenizer over the texts of ``envs`` (:func:`env_texts`) and ``extra_texts``.

    Envs that list game files are read, not played; the others are played.
    """
    texts: list[str] = list(extra_texts)
    for env in envs:
        has_files = bool(getattr(env.unwrapped, "game_files", None))
        texts += env_texts(env, play_episodes=0 if has_files else play_episodes)
    return build_word_tokenizer(texts)


#: ``tokenizer_class`` values of a plain fast tokenizer (a ``tokenizer.json``, e.g. the word-level
#: one of the ``tiny`` model): transformers 5 writes ``TokenizersBackend``, 4 wrote the other.
PLAIN_FAST_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(model: str, tokenizer_dir: Path | None = None) -> PreTrainedTokenizerBase:
    """A saved tokenizer (checkpoint), or the pretrained model's own, padded on the left.

    A model directory that holds a plain fast tokenizer next to its ``config.json`` (what
    ``hiper-gym sft`` writes for the ``tiny`` model) is loaded as that tokenizer: ``AutoTokenizer``
    would pick the model type's tokenizer class (``Qwen2Tokenizer``), which reads the word-level
    vocabulary letter by letter.
    """
    source = Path(tokenizer_dir) if tokenizer_dir else Path(model).expanduser()
    name = str(tokenizer_dir) if tokenizer_dir else model
    if saved_tokenizer_class(source) in PLAIN_FAST_TOKENIZERS:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(source))
    else:
        tokenizer = AutoTokenizer.from_pretrained(name)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def saved_tokenizer_class(directory: Path) -> str | None:
    """The ``tokenizer_class`` a local tokenizer directory names (``None``: not local, or none)."""
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None  # let AutoTokenizer give its own error


@dataclass
class Models:
    """The networks of a HiPER learner.

    Attributes:
        actor: The policy LM (with LoRA adapters when ``lora``).
        critic: The separate 3-head critic LM, or ``None`` with a shared critic.
        value_head: The 3-head value head on the actor, or ``None`` with a separate critic.
        reference: The frozen reference LM for the KL term, or ``None`` when the KL is off or
            LoRA is on (then the reference is the actor with its adapters disabled).
    """

    actor: PreTrainedModel
    critic: PreTrainedModel | None
    value_head: SharedValueHead | None
    reference: PreTrainedModel | None


def build_models(
    *,
    model: str,
    vocab_size: int,
    tiny_shape: TinyShape,
    critic: str,
    value_heads: int = NUM_VALUE_HEADS,
    dtype: torch.dtype,
    device: str,
    gradient_checkpointing: bool,
    lora: bool,
    lora_rank: int,
    lora_alpha: int,
    with_reference: bool,
    pad_token_id: int | None,
) -> Models:
    """Build actor, critic and reference. Call right after seeding: random weights use torch RNG.

    ``critic`` is ``"separate"`` (a critic LM with ``value_heads`` outputs per token),
    ``"shared"`` (``value_heads`` linear heads on the actor) or ``"none"`` (critic-free).
    """
    config = model_config(model, vocab_size, tiny_shape)
    config.pad_token_id = pad_token_id
    actor = load_actor(
        model, config, dtype=dtype, device=device, gradient_checkpointing=gradient_checkpointing
    )
    reference = None
    if with_reference and not lora:
        reference = copy.deepcopy(actor).eval()
        reference.requires_grad_(False)
    if lora:
        from peft import LoraConfig, get_peft_model

        lora_config = LoraConfig(
            r=lora_rank, lora_alpha=lora_alpha, target_modules="all-linear", lora_dropout=0.0
        )
        with warnings.catch_warnings():
            # peft reads transformers' deprecated ``is_gradient_checkpointing``; not ours to fix
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            actor = get_peft_model(actor, lora_config)
    if critic == "none":
        return Models(actor=actor, critic=None, value_head=None, reference=reference)
    if critic == "shared":
        value_head = SharedValueHead(config.hidden_size, value_heads).to(device)
        return Models(actor=actor, critic=None, value_head=value_head, reference=reference)
    if critic != "separate":
        raise ValueError(f"critic must be 'separate', 'shared' or 'none', got {critic!r}")
    critic_model = load_token_critic(
        model,
        config,
        dtype=dtype,
        device=device,
        gradient_checkpointing=gradient_checkpointing,
        num_heads=value_heads,
    )
    return Models(actor=actor, critic=critic_model, value_head=None, reference=reference)


def is_config_only(model: str) -> bool:
    """The model is built from a config with random weights (needs the word-level tokenizer)."""
    return model in CONFIG_ONLY_MODELS
