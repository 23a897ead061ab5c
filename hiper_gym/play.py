r"""``hiper-gym play ENV_ID``: play a text environment yourself in the terminal.

Each turn shows the observation and, when the env provides ``info["admissible_commands"]``, the
commands, numbered. Type a number to send that command, or any text to send it as typed. ``quit``
(or end of input, Ctrl-D) stops; a finished episode is followed by a new one.

Example:
    >>> import io, sys
    >>> sys.stdin = io.StringIO("quit\n")
    >>> main(["HiPER-ALFWorld-v0", "--seed", "0"])  # doctest: +ELLIPSIS
    -= Welcome to TextWorld, ALFRED! =-
    ...
    > 0
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

QUIT_WORDS = frozenset({"quit", "exit", "q"})


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hiper-gym play", description="Play a HiPER text environment in the terminal."
    )
    parser.add_argument("env_id", help="a registered id, e.g. HiPER-ALFWorld-v0")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first reset")
    parser.add_argument("--game", type=int, default=None, help="game index (reset option)")
    parser.add_argument("--data-dir", default=None, help="the env's data_dir (e.g. ALFWorld data)")
    parser.add_argument("--split", default=None, help="the env's split (e.g. valid_unseen)")
    return parser.parse_args(list(argv))


def _show(observation: str, info: dict[str, Any]) -> list[str]:
    """Print the observation and the numbered commands; return the commands."""
    print(observation)
    commands = list(info.get("admissible_commands", []))
    if commands:
        print("\nCommands:")
        for number, command in enumerate(commands, start=1):
            print(f"  {number:2d}. {command}")
    return commands


def _read_action(commands: Sequence[str]) -> str | None:
    """A command from a number or free text; ``None`` on quit or end of input."""
    try:
        typed = input("\n> ").strip()
    except EOFError:
        return None
    if typed.lower() in QUIT_WORDS:
        return None
    if typed.isdigit() and 1 <= int(typed) <= len(commands):
        return commands[int(typed) - 1]
    return typed


def main(argv: Sequence[str]) -> int:
    """Run the play loop until ``quit`` or end of input.

    Args:
        argv: ``ENV_ID [--seed N] [--game I] [--data-dir D] [--split S]``.

    Returns:
        The exit status (0).
    """
    args = _parse_args(argv)
    import hiper_gym  # noqa: F401  (registers the HiPER-* ids)

    env_kwargs = {"data_dir": args.data_dir, "split": args.split}
    env = gym.make(args.env_id, **{k: v for k, v in env_kwargs.items() if v is not None})
    options = {"game": args.game} if args.game is not None else None
    seed = args.seed
    try:
        while True:
            observation, info = env.reset(seed=seed, options=options)
            seed = options = None  # later episodes continue the seeded draw
            if not _play_episode(env, observation, info):
                return 0
    finally:
        env.close()


def _play_episode(env: gym.Env, observation: str, info: dict[str, Any]) -> bool:
    """Play one episode; ``False`` when the player quit."""
    episode_return, steps = 0.0, 0
    while True:
        commands = _show(observation, info)
        action = _read_action(commands)
        if action is None:
            return False
        observation, reward, terminated, truncated, info = env.step(action)
        episode_return += float(reward)
        steps += 1
        if terminated or truncated:
            print(observation)
            outcome = "won" if info.get("won", terminated) else "out of steps"
            print(
                f"\n=== Episode over ({outcome}): return {episode_return:g} in {steps} steps ===\n"
            )
            return True
