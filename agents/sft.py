"""Behaviour cloning: a base policy from expert demonstrations, for any algorithm to start from.

The paper's runs start from an instruction-tuned model that can already act (its base models
succeed in 3-13% of ALFWorld games); ``hiper-gym sft`` makes such a base for this suite:

1. **Demonstrations.** The expert plays the training games through the very envs the trainer
   builds (:func:`~hiper_gym.agents.learner_setup.env_factory` with the same prompt style,
   history length and response format), so every demonstration prompt is the text the trainer
   will show. ALFWorld's expert is its walkthrough (``info["expert_plan"]``); WebShop's is the
   instruction-reading shopper of :mod:`hiper_gym.webshop.oracle`. A Plan-Execute response takes
   its subgoal from the plan (:func:`~hiper_gym.wrappers.plan_to_subgoals`: each subgoal is a
   plan step that is not navigation, with the moves before it)::

       <switch>SWITCH</switch><subgoal> take mug 1 from shelf 1</subgoal><action>go to shelf 1...
       <switch>KEEP</switch><subgoal> take mug 1 from shelf 1</subgoal><action>take mug 1 fro...

   SWITCH on the first turn of a subgoal, KEEP (the same subgoal text) on the others; a flat
   response is the ``<action>`` block alone. Responses are tokenized piece by piece as the
   constrained-decoding grammar writes them (:mod:`hiper_gym.agents.constrained`), and each turn
   is read back as a rollout reads a sampled response
   (:func:`~hiper_gym.agents.turn_text.read_response`), which must find it format-valid.
   ``--demo-episodes`` (or ``--demo-fraction``) sets how much data there is, so a base can be
   made as weak as the paper's.
2. **Training.** A short loop over the trainer's own forward
   (:func:`~hiper_gym.agents.policy.policy_forward`): mean negative log-likelihood of the response
   tokens only, AdamW, minibatches of turns. A loop rather than TRL's ``SFTTrainer``: the forward,
   the padding and the grammar masks already exist here, and the loss is then computed on the
   distribution the trainer samples from: with ``--constrained-decoding`` the model's softmax
   restricted to the grammar's allowed tokens, so forced tokens (tags, a KEEP's copy) cost nothing.
3. **Output.** ``runs/<run>/model/`` (``save_pretrained`` of the actor and the tokenizer: pass it
   to ``hiper-gym train ALGO --model runs/<run>/model``), ``metrics.csv`` (one row per step),
   ``demonstrations.jsonl``, checkpoints (``--resume RUN_DIR`` continues bit for bit; Ctrl-C
   saves the last completed step) and ``base_eval.json``: the base policy's success on the
   training games and on a held-out split, played by the trainer's evaluation.

``hiper-gym sft [PRESET] [--flags]``; ``PRESET`` is ``tiny-cpu`` (default: the tiny model of the
trainer's ``tiny-cpu`` preset) or ``paper`` (Qwen2.5-1.5B-Instruct, GPU).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import tyro
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hiper_gym.agents.checkpoint import (
    TOKENIZER_DIR,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from hiper_gym.agents.constrained import (
    TEMPLATE_COMMAND,
    AllowedTokens,
    ResponseGrammar,
    allowed_token_masks,
)
from hiper_gym.agents.demo_renaming import PLACEHOLDER_WORDS, rename_pool, renamed_copies
from hiper_gym.agents.evaluate import evaluate_policy, success_summary
from hiper_gym.agents.learner_setup import (
    PROMPT_STYLES,
    build_env_tokenizer,
    build_models,
    env_factory,
    env_family,
    env_settings,
    env_texts,
    held_out_split,
    is_config_only,
    load_tokenizer,
    make_envs,
    num_games,
    reset_options_for,
)
from hiper_gym.agents.models import TinyShape
from hiper_gym.agents.policy import pad_turns, policy_forward
from hiper_gym.agents.tokenizer_builder import build_word_tokenizer, split_words
from hiper_gym.agents.trainer import (
    DeferredInterrupt,
    check_range,
    data_dir_problems,
    device_problems,
    model_problems,
    seed_everything,
)
from hiper_gym.agents.turn_text import chat_prompt_ids, read_response
from hiper_gym.webshop.oracle import instruction_query, shopper_actions
from hiper_gym.wrappers import plan_to_subgoals

MODEL_DIR = "model"
DEMOS_FILE = "demonstrations.jsonl"
METRICS_FILE = "metrics.csv"
BASE_EVAL_FILE = "base_eval.json"
METRIC_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "response_tokens",
    "grad_norm",
    "learning_rate",
    "seconds",
)
#: WebShop commands that only move between pages: the navigation of a WebShop subgoal.
_WEBSHOP_NAVIGATION = re.compile(r"search\[.*\]|click\[(next >|< prev|back to search)\]")


@dataclass
class Args:
    """Behaviour-clone a base policy (the ``tiny-cpu`` preset's defaults)."""

    # --- experiment ---
    exp_name: str = "sft"
    """name of the experiment (first part of the run name)"""
    seed: int = 6
    """seed of python, numpy and torch, of the demonstration games and of the batch order"""
    output_dir: str = "runs"
    """where run directories are written"""
    run_name: str | None = None
    """run directory name; default ``<exp_name>__<env>__<seed>__<unix time>``"""
    resume: str | None = None
    """a run directory or checkpoint to continue exactly (its saved config is used, except
    ``--num-epochs``, ``--max-steps`` and ``--progress``)"""
    device: str = "cpu"
    """``cpu`` or ``cuda`` (``cuda:1``...)"""
    threads: int | None = 1
    """torch CPU threads (``None``: torch's default)"""
    progress: bool = True
    """show a live progress bar"""

    # --- environment: the trainer's settings, so the prompts are the ones it shows ---
    env_id: str = "HiPER-ALFWorld-v0"
    """a registered text env (``HiPER-ALFWorld-v0``, ``HiPER-WebShop-v0``)"""
    data_dir: str | None = None
    """the env's real data (as the trainer's ``--data-dir``); ``None``: the embedded games"""
    train_split: str | None = "train"
    """the split whose games are demonstrated (``None``: the env's default)"""
    eval_split: str | None = None
    """the held-out split of the final evaluation (``None``: ``valid_unseen`` on ALFWorld,
    ``test`` on WebShop)"""
    history_length: int = 2
    """observation/action pairs shown in the prompt (as the trainer's ``--history-length``)"""
    prompt_style: Literal["paper", "compact", "minimal"] = "minimal"
    """as the trainer's ``--prompt-style``"""
    response_format: Literal["plan_execute", "flat"] = "plan_execute"
    """``plan_execute``: switch, subgoal and action blocks; ``flat``: an ``<action>`` block"""
    max_turns: int = 40
    """turn limit of a demonstration and of an evaluation episode"""

    # --- demonstrations ---
    demo_episodes: int | None = None
    """expert episodes to clone (``None``: every training game once); games are drawn in a
    seeded order, and cycled when there are more episodes than games"""
    demo_fraction: float | None = None
    """instead of ``--demo-episodes``: this fraction of the training games, each played once"""
    rename_copies: int = 0
    """ALFWorld: also clone this many renamed copies of every demonstration episode, each with
    its objects and receptacles given other names throughout (``agents/demo_renaming.py``), so
    the policy learns to act on the names the goal gives rather than on memorised ones"""
    demo_expert: Literal["walkthrough", "handcoded"] = "walkthrough"
    """ALFWorld's expert: ``walkthrough``, the game's shortest plan (it walks straight to the
    object it knows the place of); ``handcoded``, ALFWorld's searching expert (DAgger's), which
    looks in receptacles until it sees the object, as a policy must in a room it never saw"""

    # --- model ---
    model: str = "tiny"
    """``tiny`` (random-init small Qwen2 over the env's word-level tokenizer, built as the trainer
    builds it), ``qwen2.5-1.5b-shape``, a local model directory or a Hub name"""
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
    dtype: Literal["float32", "bfloat16"] = "float32"
    """parameter dtype"""
    max_prompt_tokens: int = 512
    """prompts are cut to their last this many tokens (as the trainer's)"""
    max_response_tokens: int = 64
    """longest response (a longer demonstration is an error)"""
    constrained_decoding: bool = True
    """train on, and evaluate with, the grammar-restricted distribution the trainer samples from
    with ``--constrained-decoding``"""
    max_subgoal_tokens: int = 8
    """subgoal texts are cut to this many tokens (the grammar's free-subgoal limit; use the same
    value for the trainer's ``--max-subgoal-tokens``)"""
    max_query_tokens: int = 16
    """WebShop search queries are cut to this many tokens (the grammar's free-query limit)"""

    # --- optimisation ---
    max_steps: int | None = 200
    """optimizer steps (the same compute whatever the amount of data: about 30-60 s on 2 CPU
    cores for the tiny model); ``None``: ``--num-epochs`` passes over the demonstrations"""
    num_epochs: int = 30
    """passes over the demonstrations when ``--max-steps None``"""
    batch_size: int = 32
    """turns per optimizer step"""
    micro_batch_size: int = 32
    """turns per forward/backward (gradient accumulation inside a batch)"""
    learning_rate: float = 2e-3
    """AdamW learning rate (constant)"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """gradient clipping"""
    checkpoint_every: int = 100
    """save a checkpoint every this many steps (and at the end)"""

    # --- evaluation of the base policy ---
    eval_episodes: int = 96
    """episodes per split of the final evaluation (0: no evaluation)"""
    eval_envs: int = 32
    """envs played in parallel in the evaluation"""
    eval_temperature: float = 1.0
    """sampling temperature of the evaluation (the ``tiny-cpu`` trainer's)"""


def paper_preset() -> Args:
    """Qwen2.5-1.5B-Instruct on a GPU with the authors' prompt and response limits."""
    return dataclasses.replace(
        Args(),
        exp_name="sft-qwen",
        device="cuda",
        threads=None,
        model="Qwen/Qwen2.5-1.5B-Instruct",
        dtype="bfloat16",
        prompt_style="paper",
        max_turns=50,
        max_prompt_tokens=2048,
        max_response_tokens=512,
        constrained_decoding=False,
        max_subgoal_tokens=16,
        max_steps=None,
        num_epochs=2,
        batch_size=16,
        micro_batch_size=4,
        learning_rate=1e-5,
        eval_temperature=0.4,
        eval_envs=16,
    )


PRESETS: dict[str, tuple[str, Callable[[], Args]]] = {
    "tiny-cpu": ("the trainer's tiny model on the embedded ALFWorld games, CPU", Args),
    "paper": ("Qwen2.5-1.5B-Instruct with the authors' prompt, GPU", paper_preset),
}
DEFAULT_PRESET = "tiny-cpu"


# ---------------------------------------------------------------------------------------------
# Demonstrations
# ---------------------------------------------------------------------------------------------


@dataclass
class Demonstration:
    """One expert turn: a (prompt, response) training pair and what the grammar replays.

    Attributes:
        episode: Index of the demonstration episode.
        game: The game (ALFWorld) or goal position in the split (WebShop) it played.
        turn: 0-based turn in the episode.
        prompt: The env's prompt text (before the chat template).
        response: The response text sent to the env.
        prompt_ids: The prompt, chat template applied, cut as the trainer cuts it.
        response_ids: The response tokens, ending with EOS.
        admissible_commands: The commands offered this turn.
        keep_copy: What a KEEP copies this turn (the previous turn's raw subgoal text).
        command: The expert's command.
        subgoal: The subgoal text (``None`` in the flat format).
        switch: The turn starts a subgoal (always ``False`` in the flat format).
        task_type: The env's ``info["task_type"]`` (or ``""``).
    """

    episode: int
    game: int
    turn: int
    prompt: str
    response: str
    prompt_ids: list[int]
    response_ids: list[int]
    admissible_commands: list[str]
    keep_copy: str | None
    command: str
    subgoal: str | None
    switch: bool
    task_type: str = ""


@dataclass
class DemoSet:
    """The demonstrations, and the expert episodes left out because they were not won."""

    turns: list[Demonstration]
    episodes: int
    lost_episodes: list[int] = field(default_factory=list)


def is_webshop(env: gym.Env) -> bool:
    """The env plays WebShop goals (it has a shop)."""
    return getattr(env.unwrapped, "shop", None) is not None


def plan_segments(
    plan: Sequence[str], is_navigation: Callable[[str], bool]
) -> list[tuple[str, bool]]:
    """Each plan step's subgoal and whether it starts one (:func:`plan_to_subgoals`'s cut).

    A subgoal is a step that is not navigation with the moves before it; trailing moves are a
    subgoal of their own, named by the last move.

    Example:
        >>> plan = ["go to a", "take x from a", "go to b", "move x to b"]
        >>> for step in plan_segments(plan, lambda command: command.startswith("go to ")):
        ...     print(step)
        ('take x from a', True)
        ('take x from a', False)
        ('move x to b', True)
        ('move x to b', False)
    """
    subgoals = plan_to_subgoals(plan, is_navigation)
    segments, position = [], 0
    for index, command in enumerate(plan):
        starts = index == 0 or not is_navigation(plan[index - 1])
        segments.append((subgoals[min(position, len(subgoals) - 1)], starts))
        if not is_navigation(command):
            position += 1
    return segments


def webshop_subgoal_names(plan: Sequence[str], asin: str, query: str) -> dict[str, str]:
    """Subgoal texts of a WebShop plan's targets, in words a policy can write.

    The target commands name products by ASIN (``click[b07xyz]``), which no subgoal should spell:
    the product click is named by what was searched for, an option by its value, the purchase
    ``buy now``.
    """
    names = {}
    for command in plan:
        argument = command.removeprefix("click[").removesuffix("]")
        if argument == asin.lower():
            names[command] = query
        elif command == "click[buy now]":
            names[command] = "buy now"
        else:
            names[command] = argument
    return names


def known_words(
    text: str, tokenizer: PreTrainedTokenizerBase, max_tokens: int, skip: frozenset[str]
) -> str:
    """``text`` as space-separated words the tokenizer knows, cut to ``max_tokens`` tokens.

    A word-level tokenizer writes free text (a subgoal, a query) only as spaced words, and maps
    words it has never seen to ``[UNK]``, which decodes to nothing: such words are dropped, and
    so are the words in ``skip`` (brackets in a query). The result has a leading space, as the
    grammar's free text does; empty when no word is known.
    """
    words: list[str] = []
    count = 0
    for word in split_words(text):
        ids = tokenizer.encode(" " + word, add_special_tokens=False)
        if word in skip or tokenizer.unk_token_id in ids or count + len(ids) > max_tokens:
            continue
        words.append(word)
        count += len(ids)
    return "".join(" " + word for word in words)


def alfworld_plan(plan: Sequence[str]) -> tuple[list[str], list[tuple[str, bool]]]:
    """An ALFWorld expert plan and each step's subgoal (:func:`plan_segments`)."""
    if not plan:
        raise ValueError("the env gives no expert_plan: build it with an expert")
    return list(plan), plan_segments(plan, lambda command: command.startswith("go to "))


def expert_commands(env: gym.Env, seed: int, options: dict[str, Any], max_turns: int) -> list[str]:
    """The commands ALFWorld's expert plays in one episode, one step at a time.

    The handcoded expert answers one command per step (it searches, so its plan is not known
    at reset); the episode is played once to record them, and the demonstration replays them
    from the same reset, which leads through the same states.
    """
    _, info = env.reset(seed=seed, options=options)
    commands: list[str] = []
    for _ in range(max_turns):
        plan = info.get("expert_plan") or []
        if not plan:
            break
        commands.append(plan[0])
        _, _, terminated, truncated, info = env.step(commands[-1])
        if terminated or truncated:
            break
    return commands


def webshop_plan(
    env: gym.Env, info: dict[str, Any], tokenizer: PreTrainedTokenizerBase, args: Args
) -> tuple[list[str], list[tuple[str, bool]]]:
    """The instruction-reading shopper's commands (:func:`shopper_actions`) and their subgoals.

    The query keeps only the instruction's words that the tokenizer can write in a free query.
    When that query does not find the product, the shopper searches the product's title in such
    words; when neither does, there is no demonstration of this goal (an empty plan).
    """
    shop = env.unwrapped.shop
    goal_index = int(info["goal_index"])
    goal = shop.goals[goal_index]
    skip = frozenset({"[", "]"})
    for text in (instruction_query(goal["instruction_text"]), goal["name"]):
        query = known_words(text, tokenizer, args.max_query_tokens, skip)
        plan = shopper_actions(shop, goal_index, query=query)
        if plan[0] == f"search[{query}]":  # not the oracle's own fallback, a raw title
            break
    else:
        return [], []
    names = webshop_subgoal_names(plan, goal["asin"], query)
    segments = plan_segments(plan, lambda command: bool(_WEBSHOP_NAVIGATION.fullmatch(command)))
    return plan, [(names[target], starts) for target, starts in segments]


def command_ids(grammar: ResponseGrammar, command: str, commands: Sequence[str]) -> list[int]:
    """Tokens of ``<action>``'s content through EOS, as the grammar writes ``command``.

    A command filling an admissible template (WebShop's ``search[<your query>]``) is the
    template's prefix, the query's own tokens, then ``]`` ``</action>`` EOS.
    """
    tokenizer = grammar.tokenizer
    for template in commands:
        match = TEMPLATE_COMMAND.fullmatch(template)
        if match and command.startswith(match["prefix"]) and command.endswith("]"):
            query = command[len(match["prefix"]) : -1]
            prefix = tokenizer.encode(match["prefix"], add_special_tokens=False)
            query_ids = tokenizer.encode(query, add_special_tokens=False)
            return prefix + query_ids + grammar.query_close + grammar.action_close
    return tokenizer.encode(command, add_special_tokens=False) + grammar.action_close


def response_ids(
    grammar: ResponseGrammar,
    command: str,
    commands: Sequence[str],
    subgoal: str | None,
    switch: bool,
) -> list[int]:
    """A demonstration's response tokens, piece by piece as the grammar writes them.

    Args:
        grammar: The grammar of the response format (its tokenizer encodes the pieces).
        command: The expert's command.
        commands: The admissible commands (a template command marks a free query).
        subgoal: The subgoal's raw text between the tags (leading space included), or ``None``
            for a flat response.
        switch: SWITCH (else KEEP).
    """
    action = command_ids(grammar, command, commands)
    if subgoal is None:
        return grammar.action_open + action
    choice = grammar.switch_choices[1 if switch else 0]
    return (
        grammar.switch_open
        + choice
        + grammar.encode_subgoal(subgoal)
        + grammar.subgoal_close
        + action
    )


def play_demonstration(
    env: gym.Env,
    episode: int,
    game: int,
    seed: int,
    tokenizer: PreTrainedTokenizerBase,
    grammar: ResponseGrammar,
    args: Args,
) -> tuple[list[Demonstration], bool]:
    """Play one expert episode; its turns and whether it was won.

    Each turn goes the rollout's way (:func:`~hiper_gym.agents.env_workers.play_response`): the
    response tokens are decoded and parsed by :func:`~hiper_gym.agents.turn_text.read_response`,
    the text is sent to the env, and the next prompt goes through the chat template
    (:func:`~hiper_gym.agents.turn_text.chat_prompt_ids`).
    """
    options = reset_options_for(env, game)
    if is_webshop(env):
        prompt, info = env.reset(seed=seed, options=options)
        plan, segments = webshop_plan(env, info, tokenizer, args)
    elif args.demo_expert == "handcoded":
        plan, segments = alfworld_plan(expert_commands(env, seed, options, args.max_turns))
        prompt, info = env.reset(seed=seed, options=options)
    else:
        prompt, info = env.reset(seed=seed, options=options)
        plan, segments = alfworld_plan(info.get("expert_plan") or [])
    flat = args.response_format == "flat"
    flavor, style = env.get_wrapper_attr("flavor"), env.get_wrapper_attr("style")
    turns: list[Demonstration] = []
    current_subgoal: str | None = None
    keep_copy: str | None = None
    steps = zip(plan[: args.max_turns], segments, strict=False)  # plans longer than the limit
    for turn, (command, (target, starts)) in enumerate(steps):
        subgoal = None if flat else subgoal_text(target, command, tokenizer, args)
        switch = not flat and starts
        commands = list(info.get("admissible_commands", []))
        ids = response_ids(grammar, command, commands, subgoal, switch)
        reading = read_response(
            tokenizer, ids, current_subgoal=current_subgoal, flavor=flavor, style=style
        )
        next_prompt, _, terminated, truncated, next_info = env.step(reading.text)
        check_turn(reading.format_valid, next_info.get("parsed_action"), command, episode, turn)
        turns.append(
            Demonstration(
                episode=episode,
                game=game,
                turn=turn,
                prompt=prompt,
                response=reading.text,
                prompt_ids=chat_prompt_ids(tokenizer, prompt, args.max_prompt_tokens),
                response_ids=ids,
                admissible_commands=commands,
                keep_copy=keep_copy,
                command=command,
                subgoal=subgoal,
                switch=switch,
                task_type=str(info.get("task_type", "")),
            )
        )
        prompt, info = next_prompt, next_info
        current_subgoal = info.get("subgoal", current_subgoal)
        keep_copy = _inner_subgoal(reading.subgoal_span)
        if terminated or truncated:
            return turns, bool(info.get("won")) and terminated
    return turns, False


def subgoal_text(target: str, command: str, tokenizer: PreTrainedTokenizerBase, args: Args) -> str:
    """The raw subgoal text of a turn (:func:`known_words` of its target, else of its command)."""
    for text in (target, command):
        words = known_words(text, tokenizer, args.max_subgoal_tokens, frozenset())
        if words:
            return words
    raise ValueError(f"the tokenizer knows no word of the subgoal {target!r}")


def _inner_subgoal(subgoal_span: str | None) -> str | None:
    """The raw text between ``<subgoal>`` tags (the rollout's ``keep_copy``)."""
    if subgoal_span is None:
        return None
    return subgoal_span.removeprefix("<subgoal>").removesuffix("</subgoal>")


def check_turn(
    format_valid: bool, parsed_action: Any, command: str, episode: int, turn: int
) -> None:
    """Raise unless the env read the demonstration as format-valid and as the expert's command."""
    if not format_valid:
        raise ValueError(f"demonstration {episode} turn {turn}: the parser finds it invalid")
    if parsed_action is not None and str(parsed_action).strip() != command.lower().strip():
        raise ValueError(
            f"demonstration {episode} turn {turn}: the env read {parsed_action!r}, "
            f"the expert played {command!r}"
        )


def demo_games(total_games: int, args: Args) -> list[int]:
    """The games the demonstrations play: a seeded order of the split's games, cycled."""
    if args.demo_fraction is not None:
        count = max(1, round(args.demo_fraction * total_games))
    elif args.demo_episodes is not None:
        count = args.demo_episodes
    else:
        count = total_games
    order = np.random.default_rng(args.seed).permutation(total_games)
    return [int(order[episode % total_games]) for episode in range(count)]


def demo_seeds(args: Args, count: int) -> list[int]:
    """The reset seed of each demonstration episode."""
    return np.random.default_rng([args.seed, 1]).integers(2**31 - 1, size=count).tolist()


def collect_demonstrations(
    args: Args, tokenizer: PreTrainedTokenizerBase, grammar: ResponseGrammar
) -> DemoSet:
    """Play the expert on the training games; keep the turns of the episodes it wins."""
    env = make_demo_env(args)
    try:
        total = num_games(env)
        if total == 0:
            raise ValueError(f"{args.env_id} lists no games to demonstrate")
        games = demo_games(total, args)
        demos = DemoSet(turns=[], episodes=len(games))
        for episode, (game, seed) in enumerate(
            zip(games, demo_seeds(args, len(games)), strict=True)
        ):
            turns, won = play_demonstration(env, episode, game, seed, tokenizer, grammar, args)
            if won:
                demos.turns.extend(turns)
            else:
                demos.lost_episodes.append(episode)
    finally:
        env.close()
    if args.rename_copies:
        demos.turns += renamed_demonstrations(demos, args, tokenizer, grammar)
    return demos


def renamed_demonstrations(
    demos: DemoSet, args: Args, tokenizer: PreTrainedTokenizerBase, grammar: ResponseGrammar
) -> list[Demonstration]:
    """``--rename-copies`` renamed copies of the won episodes, numbered after the expert's."""

    def encode(
        prompt: str, command: str, commands: list[str], subgoal: str | None, switch: bool
    ) -> tuple[list[int], list[int]]:
        return (
            chat_prompt_ids(tokenizer, prompt, args.max_prompt_tokens),
            response_ids(grammar, command, commands, subgoal, switch),
        )

    placeholders = PLACEHOLDER_WORDS[0] in tokenizer.get_vocab()  # added by build_tokenizer
    return renamed_copies(
        demos.turns,
        args.rename_copies,
        rename_pool(demos.turns, placeholders),
        np.random.default_rng([args.seed, 2]),
        encode,
        first_episode=demos.episodes,
    )


def make_demo_env(args: Args) -> gym.Env:
    """A training-split env exactly as the trainer builds it, plus ALFWorld's expert plan.

    An env without an ``expert`` argument (WebShop, whose oracle needs none) is built without.
    """
    try:
        return make_env(args, args.train_split, expert=args.demo_expert)
    except TypeError:
        return make_env(args, args.train_split)


def make_env(args: Args, split: str | None, expert: str | None = None) -> gym.Env:
    """One env of ``split`` with the trainer's prompt settings."""
    return env_factory(
        args.env_id,
        split=split,
        **env_settings(args),
        expert=expert,
    )()


def save_demonstrations(path: Path, demos: DemoSet) -> None:
    """One JSON line per turn (``demonstrations.jsonl``), after a header line of counts."""
    with path.open("w") as handle:
        header = {"episodes": demos.episodes, "lost_episodes": demos.lost_episodes}
        handle.write(json.dumps(header) + "\n")
        for turn in demos.turns:
            handle.write(json.dumps(dataclasses.asdict(turn)) + "\n")


def load_demonstrations(path: Path) -> DemoSet:
    """Read what :func:`save_demonstrations` wrote."""
    with path.open() as handle:
        header = json.loads(handle.readline())
        turns = [Demonstration(**json.loads(line)) for line in handle if line.strip()]
    return DemoSet(turns=turns, episodes=header["episodes"], lost_episodes=header["lost_episodes"])


# ---------------------------------------------------------------------------------------------
# Tokenizer, model, grammar
# ---------------------------------------------------------------------------------------------


def evaluation_split(args: Args) -> str:
    """The split of the held-out evaluation (``--eval-split``, else the env's held-out split)."""
    return args.eval_split or held_out_split(args.env_id)


def build_tokenizer(args: Args) -> PreTrainedTokenizerBase:
    """The model's tokenizer; for ``tiny``, the word-level one the trainer builds from its envs.

    The trainer reads its training env and its evaluation env; here the evaluation env is the
    held-out split's, so the base policy can write the commands of the held-out games. On
    WebShop the catalogue's texts are added (:func:`catalogue_texts`).
    """
    if not is_config_only(args.model):
        return load_tokenizer(args.model)
    splits = dict.fromkeys([args.train_split, evaluation_split(args)])
    envs = [make_env(args, split) for split in splits]
    try:
        if not is_webshop(envs[0]):
            extra = PLACEHOLDER_WORDS if args.rename_copies else ()
            return build_env_tokenizer(envs, extra_texts=extra)
        texts = [text for env in envs for text in env_texts(env, play_episodes=16)]
        return build_word_tokenizer(texts + catalogue_texts(envs[0]))
    finally:
        for env in envs:
            env.close()


def catalogue_texts(env: gym.Env) -> list[str]:
    """What a WebShop policy writes: product ASINs, titles, option values and instructions.

    The trainer's word-level tokenizer reads only the pages of 16 random episodes, which show a
    few of the catalogue's products: an ASIN it never saw is ``[UNK]``, so the policy could not
    click most products. Adding these texts lets every demonstration, and the policy, name them.
    """
    shop = env.unwrapped.shop
    texts = [goal["instruction_text"] for goal in shop.goals]
    for product in shop.catalogue.products:
        texts += [product["asin"].lower(), product["Title"]]
        texts += [value for values in product["options"].values() for value in values]
    return texts


def build_actor(args: Args, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The policy LM as the trainer builds it (random ``tiny`` weights come from the torch seed)."""
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
        critic="none",
        value_heads=1,
        dtype=torch.bfloat16 if args.dtype == "bfloat16" else torch.float32,
        device=args.device,
        gradient_checkpointing=False,
        lora=False,
        lora_rank=16,
        lora_alpha=32,
        with_reference=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return models.actor


def build_grammar(
    args: Args, tokenizer: PreTrainedTokenizerBase, actor: PreTrainedModel
) -> ResponseGrammar:
    """The response grammar of the trainer's ``--constrained-decoding`` for this format.

    Built also without constrained decoding: it is how the demonstrations are tokenized.
    """
    return ResponseGrammar.from_tokenizer(
        tokenizer,
        actor.get_output_embeddings().weight.shape[0],
        args.max_subgoal_tokens,
        max_query_tokens=args.max_query_tokens,
        style=args.response_format,
    )


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class SFTState:
    """Everything a step reads and updates."""

    args: Args
    tokenizer: PreTrainedTokenizerBase
    actor: PreTrainedModel
    optimizer: torch.optim.Optimizer
    grammar: ResponseGrammar
    demos: DemoSet
    allowed: list[AllowedTokens] | None
    step: int = 0

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass over the demonstrations."""
        return math.ceil(len(self.demos.turns) / self.args.batch_size)

    @property
    def total_steps(self) -> int:
        """Steps of the whole run (``--max-steps``, else ``--num-epochs`` passes)."""
        if self.args.max_steps is not None:
            return self.args.max_steps
        return self.args.num_epochs * self.steps_per_epoch


def demo_masks(
    demos: DemoSet, grammar: ResponseGrammar, constrained: bool
) -> list[AllowedTokens] | None:
    """Each turn's allowed tokens under the grammar (``None`` without constrained decoding).

    Raises:
        ValueError: If a demonstration leaves the grammar (e.g. a longer subgoal than its limit).
    """
    if not constrained:
        return None
    masks = []
    for turn in demos.turns:
        try:
            masks.append(
                allowed_token_masks(
                    grammar, turn.admissible_commands, turn.keep_copy, turn.response_ids
                )
            )
        except ValueError as error:
            raise ValueError(
                f"demonstration {turn.episode} turn {turn.turn} ({turn.response!r}) is outside "
                f"the constrained-decoding grammar: {error}"
            ) from error
    return masks


def batch_indices(state: SFTState, step: int) -> list[int]:
    """The turns of ``step``: its slice of a seeded shuffle of the demonstrations for its epoch.

    A pure function of the seed and the step, so a resumed run draws the same batches.
    """
    epoch, position = divmod(step, state.steps_per_epoch)
    generator = torch.Generator().manual_seed(state.args.seed * 1_000_003 + epoch)
    order = torch.randperm(len(state.demos.turns), generator=generator).tolist()
    size = state.args.batch_size
    return order[position * size : (position + 1) * size]


def response_nll(state: SFTState, indices: Sequence[int]) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the response tokens of some turns, and their count.

    Prompt tokens are context only: the loss is on the response (its EOS included).
    """
    turns = [state.demos.turns[i] for i in indices]
    allowed = None if state.allowed is None else [state.allowed[i] for i in indices]
    batch = pad_turns(
        [turn.prompt_ids for turn in turns],
        [turn.response_ids for turn in turns],
        [-1] * len(turns),
        state.tokenizer.pad_token_id,
        allowed,
    ).to(state.args.device)
    output = policy_forward(state.actor, batch, with_entropy=False)
    mask = batch.response_mask.to(output.log_probs.dtype)
    return -(output.log_probs.float() * mask).sum(), int(mask.sum().item())


def train_step(state: SFTState, defer: DeferredInterrupt) -> dict[str, float]:
    """One optimizer step on one batch (micro-batches accumulate); its metrics."""
    args = state.args
    started = time.perf_counter()
    indices = batch_indices(state, state.step)
    tokens = sum(len(state.demos.turns[i].response_ids) for i in indices)
    state.actor.train()
    with defer:  # a Ctrl-C waits for the step: a checkpoint never holds half an update
        state.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, len(indices), args.micro_batch_size):
            nll, _ = response_nll(state, indices[start : start + args.micro_batch_size])
            (nll / tokens).backward()  # the batch's token mean, whatever the micro-batching
            total += float(nll.detach())
        params = [p for group in state.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        state.optimizer.step()
    state.step += 1
    return {
        "step": state.step,
        "epoch": (state.step - 1) // state.steps_per_epoch,
        "loss": total / tokens,
        "response_tokens": tokens,
        "grad_norm": float(grad_norm),
        "learning_rate": args.learning_rate,
        "seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------------------
# Run outputs: metrics, checkpoints, model
# ---------------------------------------------------------------------------------------------


class MetricsWriter:
    """``metrics.csv``: one row per step; a resumed run keeps the rows up to its checkpoint."""

    def __init__(self, path: Path, resume_after: int | None) -> None:
        self.path = path
        kept = []
        if resume_after is not None and path.exists():
            with path.open(newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if int(row["step"]) <= resume_after]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)

    def log(self, metrics: dict[str, float]) -> None:
        """Append one step's row."""
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            writer.writerow(metrics)


def checkpoint_state(state: SFTState) -> dict[str, Any]:
    """What a checkpoint holds (see :mod:`hiper_gym.agents.checkpoint`)."""
    return {
        "kind": "sft",
        "config": dataclasses.asdict(state.args),
        "step": state.step,
        "actor": state.actor.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "rng": rng_state(np.random.default_rng(state.args.seed)),
    }


def save(state: SFTState, run_dir: Path, defer: DeferredInterrupt) -> Path:
    """Checkpoint the last completed step under the interrupt guard."""
    with defer:
        return save_checkpoint(
            run_dir / "checkpoints", state.step, checkpoint_state(state), state.tokenizer
        )


def save_model(state: SFTState, run_dir: Path) -> Path:
    """``<run>/model/``: the actor and tokenizer, loadable by ``hiper-gym train --model``."""
    directory = run_dir / MODEL_DIR
    state.actor.save_pretrained(str(directory))
    state.tokenizer.save_pretrained(str(directory))
    return directory


def train_loop(state: SFTState, run_dir: Path) -> bool:
    """Train to the last step, checkpointing periodically and at the end; ``False`` on Ctrl-C."""
    args = state.args
    metrics_writer = MetricsWriter(run_dir / METRICS_FILE, state.step)
    progress = make_progress(state)
    defer = DeferredInterrupt()
    try:
        while state.step < state.total_steps:
            metrics = train_step(state, defer)
            metrics_writer.log(metrics)
            if progress is not None:
                progress.set_postfix_str(f"epoch {metrics['epoch']} loss {metrics['loss']:.4f}")
                progress.update(1)
            if state.step % args.checkpoint_every == 0 or state.step == state.total_steps:
                save(state, run_dir, defer)
            if defer.pending:  # Ctrl-C during the step or a save
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        directory = save(state, run_dir, defer)
        print(f"\ninterrupted: checkpoint saved to {directory}", file=sys.stderr)
        return False
    finally:
        if progress is not None:
            progress.close()
    return True


def make_progress(state: SFTState) -> Any:
    """A tqdm bar over steps, or ``None`` with ``--no-progress``."""
    if not state.args.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=state.total_steps, initial=state.step, desc="sft", unit="step", dynamic_ncols=True
    )


# ---------------------------------------------------------------------------------------------
# Evaluation of the base policy
# ---------------------------------------------------------------------------------------------


def evaluate_base(state: SFTState) -> dict[str, Any]:
    """Success of the trained base on the training games and the held-out split (per task type).

    Played by the trainer's :func:`~hiper_gym.agents.evaluate.evaluate_policy`, with its grammar
    when ``--constrained-decoding``.
    """
    args = state.args
    grammar = state.grammar if args.constrained_decoding else None
    results: dict[str, Any] = {}
    for split in dict.fromkeys([args.train_split, evaluation_split(args)]):
        envs = make_envs(
            args.env_id,
            args.eval_envs,
            split=split,
            **env_settings(args),
        )
        try:
            state.actor.eval()
            results[str(split)] = evaluate_policy(
                envs,
                state.actor,
                state.tokenizer,
                num_episodes=args.eval_episodes,
                max_turns=args.max_turns,
                temperature=args.eval_temperature,
                max_prompt_tokens=args.max_prompt_tokens,
                max_response_tokens=args.max_response_tokens,
                reward_scale=1.0,
                grammar=grammar,
                seed=args.seed,
            )
        finally:
            for env in envs:
                env.close()
    return results


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


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
        prog="hiper-gym sft [PRESET]",
        description=(
            "Behaviour-clone a base policy from expert demonstrations. "
            f"Presets ({DEFAULT_PRESET} when omitted): {presets_help}."
        ),
    )


def validate(args: Args) -> list[str]:
    """Every problem with the settings, one message each, before any work is done."""
    at_least_one = (
        "max_turns",
        "demo_episodes",
        "max_prompt_tokens",
        "max_response_tokens",
        "max_subgoal_tokens",
        "max_query_tokens",
        "num_epochs",
        "max_steps",
        "batch_size",
        "micro_batch_size",
        "checkpoint_every",
        "eval_envs",
        "tiny_hidden_size",
        "tiny_layers",
        "tiny_heads",
        "tiny_kv_heads",
        "tiny_intermediate_size",
    )
    problems = check_range(args, at_least_one, 1)
    problems += check_range(args, ("history_length", "eval_episodes", "seed", "weight_decay"), 0)
    problems += check_range(args, ("learning_rate", "eval_temperature", "max_grad_norm"), 0, True)
    if args.threads is not None and args.threads < 1:
        problems.append(f"--threads must be >= 1, got {args.threads}")
    if args.demo_fraction is not None:
        if not 0.0 < args.demo_fraction <= 1.0:  # NaN fails too
            problems.append(f"--demo-fraction must be in (0, 1], got {args.demo_fraction}")
        if args.demo_episodes is not None:
            problems.append("give --demo-episodes or --demo-fraction, not both")
    if args.prompt_style not in PROMPT_STYLES:
        problems.append(f"--prompt-style must be one of {PROMPT_STYLES}")
    if args.env_id not in gym.registry:
        problems.append(f"--env-id {args.env_id}: not a registered env")
    problems += data_dir_problems(args.data_dir)
    if args.rename_copies < 0:
        problems.append(f"--rename-copies must be >= 0, got {args.rename_copies}")
    if args.rename_copies and env_family(args.env_id) != "alfworld":
        problems.append("--rename-copies renames ALFWorld's objects and receptacles: ALFWorld only")
    return problems + device_problems(args.device) + model_problems(args.model)


def fail(message: str) -> int:
    """Print a usage error as argparse and tyro do; their exit status 2."""
    print(f"hiper-gym sft: {message}", file=sys.stderr)
    return 2


def start(args: Args) -> tuple[SFTState, Path]:
    """A new run: tokenizer, actor, demonstrations and optimizer, all from ``args.seed``."""
    seed_everything(args.seed)
    tokenizer = build_tokenizer(args)
    actor = build_actor(args, tokenizer)
    grammar = build_grammar(args, tokenizer, actor)
    demos = collect_demonstrations(args, tokenizer, grammar)
    if not demos.turns:
        raise ValueError("the expert won no demonstration episode")
    run_name = args.run_name or f"{args.exp_name}__{args.env_id}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.output_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_demonstrations(run_dir / DEMOS_FILE, demos)
    return make_state(args, tokenizer, actor, grammar, demos), run_dir


def make_state(
    args: Args,
    tokenizer: PreTrainedTokenizerBase,
    actor: PreTrainedModel,
    grammar: ResponseGrammar,
    demos: DemoSet,
) -> SFTState:
    """The training state: checks every demonstration against the grammar and the limits."""
    longest = max(len(turn.response_ids) for turn in demos.turns)
    if longest > args.max_response_tokens:
        raise ValueError(
            f"a demonstration response has {longest} tokens, more than --max-response-tokens "
            f"{args.max_response_tokens}"
        )
    optimizer = torch.optim.AdamW(
        [p for p in actor.parameters() if p.requires_grad],
        lr=args.learning_rate,
        weight_decay=args.weight_decay,
    )
    allowed = demo_masks(demos, grammar, args.constrained_decoding)
    return SFTState(args, tokenizer, actor, optimizer, grammar, demos, allowed)


def resume(args: Args) -> tuple[SFTState, Path]:
    """Continue a run from its latest checkpoint (its config, except the step budget and bar)."""
    assert args.resume is not None
    directory, saved = load_checkpoint(args.resume)
    if saved.get("kind") != "sft":
        raise ValueError(f"{args.resume} is not a hiper-gym sft run")
    run_dir = directory.parent.parent  # <run>/checkpoints/iter_N
    config = {**saved["config"], "resume": str(directory)}
    config.update(num_epochs=args.num_epochs, max_steps=args.max_steps, progress=args.progress)
    resumed = Args(**config)
    seed_everything(resumed.seed)
    tokenizer = load_tokenizer(resumed.model, directory / TOKENIZER_DIR)
    actor = build_actor(resumed, tokenizer)
    grammar = build_grammar(resumed, tokenizer, actor)
    demos = load_demonstrations(run_dir / DEMOS_FILE)
    state = make_state(resumed, tokenizer, actor, grammar, demos)
    actor.load_state_dict(saved["actor"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.step = int(saved["step"])
    restore_rng_state(saved["rng"], np.random.default_rng(resumed.seed))
    return state, run_dir


def main(argv: Sequence[str] | None = None) -> int:
    """``hiper-gym sft [PRESET] [--flags]``; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    problems = validate(args)
    if problems:
        return fail("\n  ".join(["invalid settings:", *problems]))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        state, run_dir = resume(args) if args.resume else start(args)
    except (FileNotFoundError, ValueError) as error:
        return fail(str(error))
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(state.args), indent=2))
    demos = state.demos
    print(
        f"run directory: {run_dir}\ndemonstrations: {len(demos.turns)} turns of "
        f"{demos.episodes - len(demos.lost_episodes)}/{demos.episodes} won expert episodes; "
        f"{state.total_steps} steps of {state.args.batch_size} turns",
        flush=True,
    )
    if not train_loop(state, run_dir):
        return 130
    model_dir = save_model(state, run_dir)
    print(f"base policy: {model_dir} (hiper-gym train ALGO --model {model_dir})", flush=True)
    if state.args.eval_episodes:
        report_evaluation(state, run_dir)
    return 0


def report_evaluation(state: SFTState, run_dir: Path) -> dict[str, Any]:
    """Evaluate the base, print the tables and write ``base_eval.json``."""
    results = evaluate_base(state)
    for split, summary in results.items():
        print(success_summary(summary, title=f"base policy on {split}"))
    demos = state.demos
    report = {
        "splits": results,
        "demo_episodes": demos.episodes,
        "demo_turns": len(demos.turns),
        "steps": state.step,
        "temperature": state.args.eval_temperature,
    }
    (run_dir / BASE_EVAL_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    raise SystemExit(main())
