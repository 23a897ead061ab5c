"""Multi-turn rollouts of a Plan-Execute LLM policy in N text environments.

Each environment is a text env wrapped as ``PromptObservation(PlanExecute(env))`` (see
:func:`make_plan_execute_env`): its observation is the turn's prompt text (history written into
the text, §1.2) and its action is the whole response, which the wrapper parses with the one parser.
Every turn, each *unfinished* environment's prompt goes through the chat template as one user
message, all prompts are sampled together (left padding), and each response is sent to its
environment. Finished environments neither generate nor step.

Each turn becomes a :class:`Turn`: the training sample of §4 (prompt ids, response ids), its block
masks (the parser's character spans mapped onto the response tokens), the low-value read-out
index, and the environment's reward and flags. Values and log-probs are computed afterwards by
batched forwards over all turns (:mod:`hiper_gym.agents.policy`), as the authors do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from hiper_gym.agents.constrained import ResponseGrammar, ResponseState
from hiper_gym.agents.policy import sample_responses
from hiper_gym.wrappers import ParsedResponse, PlanExecute, parse_response
from hiper_gym.wrappers.prompt_observation import PromptObservation
from hiper_gym.wrappers.prompts import PromptBuilder, PromptTemplate
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Turn:
    """One turn of one episode: a training sample (§4).

    Attributes:
        episode_id: Unique id of the episode within the rollout.
        turn_index: 0-based turn number in the episode.
        task_type: The env's ``info["task_type"]`` (or ``""``).
        prompt_ids: The prompt, chat template applied.
        response_ids: The sampled response (ends with EOS when the model wrote one).
        response_text: The response decoded with special tokens skipped (what the env got).
        admissible_commands: The commands offered this turn (constrained decoding replays them).
        current_subgoal: The subgoal in force before the turn (``None`` at turn 0).
        keep_copy: What a KEEP repeats under constrained decoding: the previous turn's raw
            subgoal text between the tags (``None`` at turn 0 or after a turn without one).
        switch_mask: Response tokens of ``<switch>...</switch>``.
        subgoal_mask: Response tokens of ``<subgoal>...</subgoal>``.
        action_mask: Response tokens of ``<action>...</action>``, or all of them when missing.
        low_value_index: Response index of the last ``</subgoal>`` token (fallback: last
            ``</switch>`` token, then -1 = the last prompt token).
        is_switch: The trainer's boundary flag (§1.4).
        has_switch_block: The response has a ``<switch>`` block.
        subgoal_span: Text of the ``<subgoal>`` block, tags included, or ``None``.
        format_valid: The response passed the §1.3 format rules.
        reward: Environment reward of the turn, scaled (``reward_scale * won``).
        won: The episode was won at this turn.
        done: The episode terminated at this turn (not set on truncation).
        last: This is the episode's last turn (terminated or truncated).
    """

    episode_id: int
    turn_index: int
    task_type: str
    prompt_ids: list[int]
    response_ids: list[int]
    response_text: str
    admissible_commands: list[str]
    current_subgoal: str | None
    keep_copy: str | None
    switch_mask: np.ndarray
    subgoal_mask: np.ndarray
    action_mask: np.ndarray
    low_value_index: int
    is_switch: bool
    has_switch_block: bool
    subgoal_span: str | None
    format_valid: bool
    reward: float = 0.0
    won: bool = False
    done: bool = False
    last: bool = False


def response_token_offsets(
    tokenizer: PreTrainedTokenizerBase, response_ids: Sequence[int]
) -> list[tuple[int, int]]:
    """Character span of each response token in the decoded response (special tokens skipped).

    Decodes token by token; when the pieces do not add up to the whole decode (a multi-byte
    character split across byte-level tokens), falls back to decoding growing prefixes.
    """
    pieces = [tokenizer.decode([token], skip_special_tokens=True) for token in response_ids]
    full = tokenizer.decode(list(response_ids), skip_special_tokens=True)
    if "".join(pieces) != full:
        ends = [
            len(tokenizer.decode(list(response_ids[: i + 1]), skip_special_tokens=True))
            for i in range(len(response_ids))
        ]
    else:
        ends = np.cumsum([len(piece) for piece in pieces]).tolist()
    starts = [0] + ends[:-1]
    return list(zip(starts, ends, strict=True))


def block_token_mask(offsets: Sequence[tuple[int, int]], start: int, end: int) -> np.ndarray:
    """Tokens whose characters overlap ``[start, end)``."""
    return np.array([s < end and e > start for s, e in offsets], dtype=bool)


def last_token_at(offsets: Sequence[tuple[int, int]], char_end: int) -> int:
    """Index of the token holding character ``char_end - 1`` (-1 if none)."""
    for index, (start, end) in enumerate(offsets):
        if start < char_end <= end:
            return index
    return -1


@dataclass(frozen=True)
class ResponseLayout:
    """Block masks and the low-value read-out index of one response (see :class:`Turn`)."""

    switch_mask: np.ndarray
    subgoal_mask: np.ndarray
    action_mask: np.ndarray
    low_value_index: int


def response_layout(
    tokenizer: PreTrainedTokenizerBase, response_ids: Sequence[int], parsed: ParsedResponse
) -> ResponseLayout:
    """Map the parser's block spans onto the response tokens (§1.4, §2.2).

    Tag tokens are included. A missing ``<action>`` block puts every response token under the
    action mask (the authors' fallback). The low value is read at the last token of
    ``</subgoal>``, else of ``</switch>``, else at the last prompt token (-1).
    """
    offsets = response_token_offsets(tokenizer, response_ids)
    empty = np.zeros(len(offsets), dtype=bool)

    def mask_of(block: Any) -> np.ndarray:
        return empty.copy() if block is None else block_token_mask(offsets, block.start, block.end)

    action_mask = (
        np.ones(len(offsets), dtype=bool)
        if parsed.action_block is None
        else mask_of(parsed.action_block)
    )
    low_value_index = -1
    for block in (parsed.subgoal_block, parsed.switch_block):
        if block is not None:
            low_value_index = last_token_at(offsets, block.end)
            break
    return ResponseLayout(
        switch_mask=mask_of(parsed.switch_block),
        subgoal_mask=mask_of(parsed.subgoal_block),
        action_mask=action_mask,
        low_value_index=low_value_index,
    )


@dataclass
class RolloutTimes:
    """Wall-clock seconds spent in each part of a rollout."""

    generation: float = 0.0
    env: float = 0.0
    bookkeeping: float = 0.0

    @property
    def total(self) -> float:
        """All rollout time."""
        return self.generation + self.env + self.bookkeeping


@dataclass
class EpisodeStats:
    """Outcome of one episode."""

    task_type: str
    won: bool
    env_return: float
    turns: int
    switches: int
    segments: int
    game: str = ""


@dataclass
class Rollout:
    """What :func:`collect_rollout` returns."""

    turns: list[Turn]
    episodes: list[EpisodeStats]
    times: RolloutTimes = field(default_factory=RolloutTimes)


@dataclass
class _EpisodeState:
    """Per-environment bookkeeping during a rollout."""

    episode_id: int
    prompt: str
    info: dict[str, Any]
    subgoal: str | None = None
    keep_copy: str | None = None
    turns: list[Turn] = field(default_factory=list)
    finished: bool = False


def make_plan_execute_env(
    env_id: str,
    *,
    history_length: int = 2,
    template: PromptTemplate | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """``PromptObservation(PlanExecute(gym.make(env_id, ...)))``: prompts in, responses out.

    Args:
        env_id: A registered text env, e.g. ``"HiPER-ALFWorld-v0"``.
        history_length: Observation/action pairs shown in the prompt (the authors: 2).
        template: Prompt wording; ``None`` is the suite's default for the env's flavour.
        **env_kwargs: Passed to ``gym.make`` (``split=...``).
    """
    plan_execute = PlanExecute(gym.make(env_id, **env_kwargs))
    builder = PromptBuilder(plan_execute.flavor, history_length=history_length, template=template)
    return PromptObservation(plan_execute, builder)


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt_texts: Sequence[str], max_prompt_tokens: int
) -> list[list[int]]:
    """Token ids of each prompt sent as one user message through the chat template.

    Each keeps its last ``max_prompt_tokens`` tokens; the texts are tokenized in one batch call.
    """
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        for text in prompt_texts
    ]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [list(ids[-max_prompt_tokens:]) for ids in encoded]


def collect_rollout(
    envs: Sequence[Any],
    actor: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    reset_options: Sequence[dict[str, Any] | None],
    reset_seeds: Sequence[int | None],
    max_turns: int,
    temperature: float,
    max_prompt_tokens: int,
    max_response_tokens: int,
    reward_scale: float,
    grammar: ResponseGrammar | None = None,
    first_episode_id: int = 0,
) -> Rollout:
    """Play one episode in each env with the actor; return every turn and episode outcome.

    Args:
        envs: Envs from :func:`make_plan_execute_env` (``info`` holds ``admissible_commands``,
            ``won``, ``subgoal``).
        actor: The policy LM (sampling only; no gradients).
        tokenizer: Its tokenizer, with a chat template.
        reset_options: ``reset`` options per env (e.g. ``{"game": 3}``).
        reset_seeds: ``reset`` seed per env.
        max_turns: Turn limit; an episode still running then is truncated.
        temperature: Sampling temperature (train 1.0, eval 0.4 in the paper).
        max_prompt_tokens: Prompts are cut to their last this many tokens.
        max_response_tokens: Response length limit.
        reward_scale: Reward of a won episode's last turn (the authors: ``10 * won``).
        grammar: Constrained decoding when given (``--constrained-decoding``).
        first_episode_id: Id of the first env's episode; the others follow.
    """
    times = RolloutTimes()
    clock = time.perf_counter()
    states: list[_EpisodeState] = []
    for index, env in enumerate(envs):
        prompt, info = env.reset(seed=reset_seeds[index], options=reset_options[index])
        states.append(_EpisodeState(episode_id=first_episode_id + index, prompt=prompt, info=info))
    times.env += time.perf_counter() - clock

    for turn_index in range(max_turns):
        running = [i for i, state in enumerate(states) if not state.finished]
        if not running:
            break
        clock = time.perf_counter()
        prompts = chat_prompt_ids(tokenizer, [states[i].prompt for i in running], max_prompt_tokens)
        decoding_states = []
        if grammar is not None:
            for i in running:
                commands = list(states[i].info.get("admissible_commands", []))
                decoding_states.append(ResponseState(grammar, commands, states[i].keep_copy))
        times.bookkeeping += time.perf_counter() - clock

        clock = time.perf_counter()
        responses = sample_responses(
            actor,
            tokenizer,
            prompts,
            temperature=temperature,
            max_new_tokens=max_response_tokens,
            states=decoding_states if grammar is not None else None,
        )
        times.generation += time.perf_counter() - clock

        for i, prompt_ids, response_ids in zip(running, prompts, responses, strict=True):
            clock = time.perf_counter()
            state = states[i]
            text = tokenizer.decode(response_ids, skip_special_tokens=True)
            commands = list(state.info.get("admissible_commands", []))
            turn = _make_turn(
                tokenizer, state, turn_index, prompt_ids, response_ids, text, commands, envs[i]
            )
            times.bookkeeping += time.perf_counter() - clock

            clock = time.perf_counter()
            prompt, _, terminated, truncated, info = envs[i].step(text)
            times.env += time.perf_counter() - clock

            won = bool(info.get("won", False))
            turn.won = won and terminated
            turn.reward = reward_scale * float(turn.won)
            turn.done = bool(terminated)
            turn.last = bool(terminated or truncated or turn_index == max_turns - 1)
            state.turns.append(turn)
            state.prompt, state.info = prompt, info
            state.subgoal = info.get("subgoal", state.subgoal)
            state.keep_copy = _inner_subgoal(turn.subgoal_span)
            state.finished = turn.last

    turns = [turn for state in states for turn in state.turns]
    episodes = [_episode_stats(state) for state in states]
    return Rollout(turns=turns, episodes=episodes, times=times)


def _make_turn(
    tokenizer: PreTrainedTokenizerBase,
    state: _EpisodeState,
    turn_index: int,
    prompt_ids: list[int],
    response_ids: list[int],
    text: str,
    commands: list[str],
    env: Any,
) -> Turn:
    """A :class:`Turn` with its parse and block masks (reward and flags are set after the step)."""
    flavor = env.get_wrapper_attr("flavor")
    style = env.get_wrapper_attr("style")
    parsed = parse_response(text, current_subgoal=state.subgoal, flavor=flavor, style=style)
    layout = response_layout(tokenizer, response_ids, parsed)
    subgoal_span = None
    if parsed.subgoal_block is not None:
        subgoal_span = text[parsed.subgoal_block.start : parsed.subgoal_block.end]
    return Turn(
        episode_id=state.episode_id,
        turn_index=turn_index,
        task_type=str(state.info.get("task_type", "")),
        prompt_ids=prompt_ids,
        response_ids=response_ids,
        response_text=text,
        admissible_commands=commands,
        current_subgoal=state.subgoal,
        keep_copy=state.keep_copy,
        switch_mask=layout.switch_mask,
        subgoal_mask=layout.subgoal_mask,
        action_mask=layout.action_mask,
        low_value_index=layout.low_value_index,
        is_switch=parsed.is_new_segment_marker,
        has_switch_block=parsed.switch_block is not None,
        subgoal_span=subgoal_span,
        format_valid=parsed.format_valid,
    )


def _inner_subgoal(subgoal_span: str | None) -> str | None:
    """The raw text between the tags of a ``<subgoal>...</subgoal>`` span (None if no span)."""
    if subgoal_span is None:
        return None
    return subgoal_span.removeprefix("<subgoal>").removesuffix("</subgoal>")


def _episode_stats(state: _EpisodeState) -> EpisodeStats:
    turns = state.turns
    return EpisodeStats(
        task_type=turns[0].task_type if turns else str(state.info.get("task_type", "")),
        won=any(turn.won for turn in turns),
        env_return=float(sum(turn.reward for turn in turns)),
        turns=len(turns),
        switches=sum(turn.is_switch for turn in turns),
        segments=sum(turn.is_switch for turn in turns[1:]) + (1 if turns else 0),
        game=str(state.info.get("gamefile", "")),
    )
