"""Evaluate a policy: success per task type with 95% Wilson intervals.

``hiper-gym eval --checkpoint runs/<run>/`` rebuilds the actor and tokenizer from the checkpoint
and plays ``--episodes`` episodes on ``--split`` (default: the run's evaluation split, held-out),
spread evenly over the split's games (:func:`spread_game`), at the evaluation temperature (the
authors: 0.4, sampled; 0: greedy).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tyro

from hiper_gym.agents.constrained import ResponseGrammar
from hiper_gym.agents.env_workers import EnvRunner
from hiper_gym.agents.rollout import collect_rollout


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (``(0, 1)`` with no trials).

    Example:
        >>> low, high = wilson_interval(8, 10)
        >>> round(low, 3), round(high, 3)
        (0.49, 0.943)
    """
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_policy(
    envs: Sequence[gym.Env] | EnvRunner,
    actor: Any,
    tokenizer: Any,
    *,
    num_episodes: int,
    max_turns: int,
    temperature: float,
    max_prompt_tokens: int,
    max_response_tokens: int,
    reward_scale: float,
    grammar: ResponseGrammar | None,
    seed: int,
    probe_env: gym.Env | None = None,
    transcript: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Play ``num_episodes`` episodes spread over the envs' games; success overall and per type.

    ``envs`` is a list of envs or an env runner (:mod:`hiper_gym.agents.env_workers`); the games
    are counted and mapped to reset options on ``probe_env`` (default: the first env of a list),
    an env like the others.

    ``transcript``, when given, receives one :func:`transcript_row` per turn played.

    Returns:
        ``{"success", "interval", "episodes", "return", "per_task": {type: {"success",
        "interval", "episodes"}}}``.
    """
    from hiper_gym.agents.learner_setup import num_games, reset_options_for

    if probe_env is None:
        if isinstance(envs, EnvRunner):
            raise ValueError("evaluate_policy needs a probe_env to go with an env runner")
        probe_env = envs[0]
    total_games = num_games(probe_env)
    rng = np.random.default_rng(seed)
    episodes = []
    for first in range(0, num_episodes, len(envs)):
        count = min(len(envs), num_episodes - first)
        games = [spread_game(first + i, num_episodes, total_games) for i in range(count)]
        rollout = collect_rollout(
            envs,
            actor,
            tokenizer,
            reset_options=[reset_options_for(probe_env, game) for game in games],
            reset_seeds=rng.integers(2**31 - 1, size=count).tolist(),
            max_turns=max_turns,
            temperature=temperature,
            max_prompt_tokens=max_prompt_tokens,
            max_response_tokens=max_response_tokens,
            reward_scale=reward_scale,
            grammar=grammar,
            first_episode_id=first,
        )
        episodes.extend(rollout.episodes)
        if transcript is not None:
            transcript += [
                transcript_row(turn, games[turn.episode_id - first]) for turn in rollout.turns
            ]
    return summarize(episodes)


def transcript_row(turn: Any, game: int | None) -> dict[str, Any]:
    """One played turn, as ``hiper-gym eval --transcripts`` writes it (a JSON line)."""
    subgoal = turn.subgoal_span
    if subgoal is not None:
        subgoal = subgoal.removeprefix("<subgoal>").removesuffix("</subgoal>").strip()
    return {
        "episode": turn.episode_id,
        "game": game,
        "task_type": turn.task_type,
        "turn": turn.turn_index,
        "switch": bool(turn.is_switch),
        "subgoal": subgoal,
        "action": turn.action,
        "format_valid": bool(turn.format_valid),
        "won": bool(turn.won),
        "last": bool(turn.last),
    }


def subgoal_use(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """How a Plan-Execute policy used its subgoals, from transcript rows.

    A *segment* runs from a SWITCH to the turn before the next one. ``switch_rate`` is the share
    of turns that SWITCH, ``segment_length`` the mean turns per segment, ``carried_out`` the
    share of segments whose subgoal text is played as an action within the segment (the
    demonstrations' subgoals name the segment's last command, e.g. ``take x 1 from y 2``), and
    ``words_acted`` the mean share of a subgoal's words that the segment's actions contain.
    """
    segments: list[tuple[str | None, list[str]]] = []
    previous_episode = None
    for row in rows:
        if row["switch"] or row["episode"] != previous_episode:  # the first row too
            segments.append((row["subgoal"], []))
        segments[-1][1].append(str(row["action"]))
        previous_episode = row["episode"]
    if not segments:
        return {"switch_rate": 0.0, "segment_length": 0.0, "carried_out": 0.0, "words_acted": 0.0}
    carried = [subgoal is not None and subgoal in actions for subgoal, actions in segments]
    acted = []
    for subgoal, actions in segments:
        words = (subgoal or "").split()
        played = set(" ".join(actions).split())
        acted.append(sum(word in played for word in words) / len(words) if words else 0.0)
    return {
        "switch_rate": float(np.mean([row["switch"] for row in rows])),
        "segment_length": len(rows) / len(segments),
        "carried_out": float(np.mean(carried)),
        "words_acted": float(np.mean(acted)),
    }


def spread_game(episode: int, num_episodes: int, total_games: int) -> int | None:
    """The game of evaluation episode ``episode``: evenly spread over the split's games.

    The split's games are sorted by task type, so fewer episodes than games still visit every
    type; more episodes than games play each game equally often (to within one).

    Example:
        >>> [spread_game(i, 4, 12) for i in range(4)]
        [0, 3, 6, 9]
    """
    if not total_games:
        return None
    if num_episodes <= total_games:
        return episode * total_games // num_episodes
    return episode % total_games


def summarize(episodes: Sequence[Any]) -> dict[str, Any]:
    """Success rates with intervals, overall and per task type, of episode outcomes."""

    def block(group: Sequence[Any]) -> dict[str, Any]:
        wins = sum(bool(episode.won) for episode in group)
        return {
            "success": wins / max(len(group), 1),
            "interval": wilson_interval(wins, len(group)),
            "episodes": len(group),
            "score": episode_score(group),
        }

    per_task: dict[str, list[Any]] = {}
    for episode in episodes:
        per_task.setdefault(episode.task_type or "(no task type)", []).append(episode)
    summary = block(episodes)
    summary["return"] = float(np.mean([episode.env_return for episode in episodes]))
    summary["per_task"] = {task: block(group) for task, group in sorted(per_task.items())}
    return summary


def episode_score(episodes: Sequence[Any]) -> float:
    """The mean of the env's score at each episode's last step (0 without episodes).

    WebShop's task score in [0, 1]; ALFWorld's is ``won``.
    """
    if not episodes:
        return 0.0
    return float(np.mean([getattr(episode, "score", episode.won) for episode in episodes]))


def success_summary(summary: dict[str, Any], title: str = "evaluation") -> str:
    """A table of success per task type with its 95% interval."""
    lines = [title, f"{'task type':34s} {'success':>8s}  95% interval   episodes"]
    rows = list(summary["per_task"].items()) + [("all", summary)]
    for task, block in rows:
        low, high = block["interval"]
        lines.append(
            f"{task:34s} {block['success']:8.3f}  [{low:.3f}, {high:.3f}]  {block['episodes']:8d}"
        )
    return "\n".join(lines)


@dataclass
class EvalArgs:
    """Evaluate a checkpoint of any algorithm."""

    checkpoint: str
    """a checkpoint directory, or a run directory (its latest checkpoint)"""
    split: str | None = None
    """the env split to play (default: the run's evaluation split, held-out by default)"""
    episodes: int | None = None
    """episodes to play (default: the run's ``eval_episodes``)"""
    temperature: float | None = None
    """sampling temperature (default: the run's ``eval_temperature``; 0: greedy decoding)"""
    max_turns: int | None = None
    """turn limit (default: the run's ``max_turns``)"""
    num_envs: int = 8
    """environments played in parallel"""
    device: str | None = None
    """``cpu`` or ``cuda`` (default: the run's device)"""
    seed: int = 0
    """seed of the sampling"""
    output: str | None = None
    """also write the summary as JSON here"""
    transcripts: str | None = None
    """also write every turn played here, one JSON line each (episode, game, task type, turn,
    SWITCH, subgoal, action, won), and print how the subgoals were used"""


def eval_problems(eval_args: EvalArgs) -> list[str]:
    """Every problem with the flags, one message each, before anything is loaded."""
    problems = []
    for name in ("episodes", "max_turns", "num_envs"):
        value = getattr(eval_args, name)
        if value is not None and value < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    temperature = eval_args.temperature
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        problems.append(
            f"--temperature must be a finite number >= 0 (0: greedy), got {temperature}"
        )
    if eval_args.seed < 0:
        problems.append(f"--seed must be >= 0, got {eval_args.seed}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``hiper-gym eval``: print success per task type with 95% intervals."""
    from hiper_gym.agents.checkpoint import TOKENIZER_DIR, load_checkpoint
    from hiper_gym.agents.trainer import (
        algorithm_from_state,
        build_learner,
        close_learner_envs,
        eval_split,
        restore_learner,
        seed_everything,
    )

    eval_args = tyro.cli(
        EvalArgs, args=list(sys.argv[1:] if argv is None else argv), prog="hiper-gym eval"
    )
    problems = eval_problems(eval_args)
    if problems:
        print("hiper-gym eval: " + "; ".join(problems), file=sys.stderr)
        return 2
    try:
        directory, state = load_checkpoint(eval_args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        print(f"hiper-gym eval: {error}", file=sys.stderr)
        return 2
    saved = algorithm_from_state(state).args
    algorithm = algorithm_from_state(
        state,
        train_split=eval_args.split or eval_split(saved),
        num_envs=eval_args.num_envs,
        env_workers=0,
        rollout_backend="hf",  # evaluation samples with the actor itself: no engine to start
        device=eval_args.device or saved.device,
    )
    args = algorithm.args
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"hiper-gym eval: --device {args.device}: CUDA is not available", file=sys.stderr)
        return 2
    try:
        learner = build_learner(algorithm, directory / TOKENIZER_DIR)
    except (ValueError, KeyError) as error:  # e.g. an unknown --split for this env
        print(f"hiper-gym eval: {error}", file=sys.stderr)
        return 2
    restore_learner(learner, state)
    seed_everything(eval_args.seed)
    transcript: list[dict[str, Any]] | None = [] if eval_args.transcripts else None
    try:
        summary = evaluate_policy(
            learner.envs,
            learner.models.actor,
            learner.tokenizer,
            num_episodes=eval_args.episodes
            if eval_args.episodes is not None
            else args.eval_episodes,
            max_turns=eval_args.max_turns if eval_args.max_turns is not None else args.max_turns,
            temperature=(
                eval_args.temperature
                if eval_args.temperature is not None
                else args.eval_temperature
            ),
            max_prompt_tokens=args.max_prompt_tokens,
            max_response_tokens=args.max_response_tokens,
            reward_scale=args.reward_scale,
            grammar=learner.grammar,
            seed=eval_args.seed,
            probe_env=learner.probe_env,
            transcript=transcript,
        )
    finally:
        close_learner_envs(learner)
    title = f"{directory} on {args.env_id} split={args.train_split}"
    print(success_summary(summary, title=title))
    if eval_args.output:
        Path(eval_args.output).write_text(json.dumps(summary, indent=2))
    if transcript is not None:  # --transcripts given
        text = "".join(json.dumps(row) + "\n" for row in transcript)
        Path(eval_args.transcripts).write_text(text)
        use = subgoal_use(transcript)
        print(
            f"subgoals: SWITCH on {use['switch_rate']:.1%} of turns, "
            f"{use['segment_length']:.2f} turns per subgoal, "
            f"{use['carried_out']:.1%} of subgoals played as an action within their segment, "
            f"{use['words_acted']:.1%} of a subgoal's words in its segment's actions"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
