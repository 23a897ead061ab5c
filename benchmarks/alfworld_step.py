"""Time HiPER-ALFWorld-v0 against the raw ALFWorld engine on the same games, side by side.

Three tables, all measured in one run:

1. step: this env's ``step`` vs the raw engine's (``AlfredDemangler(PddlEnv)``, spec §3's direct
   path), replaying each game's walkthrough. The env's engine derives the same text with a faster
   grammar (memoised template parses, no context deep copies); target >= 2x faster per step.
2. reset: a repeated reset of one game in this env (cached, snapshot restore) vs ALFWorld's gym
   path (``textworld.gym.register_games(..., wrappers=[AlfredDemangler, AlfredInfos])``, which
   reloads the game file on every reset); target >= 2x faster. The engine's direct-path reset
   (no reload, but a PDDL re-translation) is shown too.
3. vector: env steps/s of ``gym.make_vec(..., vectorization_mode="async")`` at 1, 2 and 4 workers,
   each env taking random admissible commands.

Usage:
    python benchmarks/alfworld_step.py                        # the embedded games
    python benchmarks/alfworld_step.py --data-dir ../shared/data/alfworld --split valid_seen
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

import hiper_gym  # noqa: F401  (registers HiPER-ALFWorld-v0)
from hiper_gym.alfworld.data import read_game
from hiper_gym.alfworld.engine import AlfredDemangler, PddlEnv, textworld
from hiper_gym.alfworld.env import ALFWorldEnv


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _raw_engine(game_file: Path) -> object:
    infos = textworld.EnvInfos(won=True, admissible_commands=True)
    engine = AlfredDemangler(PddlEnv(infos), shuffle=False)
    engine.load(str(game_file))
    return engine


def bench_steps(
    env: ALFWorldEnv, games: list[int], repeats: int
) -> tuple[list[float], list[float]]:
    """Per-step seconds of the raw engine and of this env, in lockstep (paired, same load)."""
    raw_times, env_times = [], []
    for game in games:
        game_file = env.game_files[game]
        engine = _raw_engine(game_file)
        for _ in range(repeats):
            engine.reset()
            env.reset(options={"game": game})
            for command in read_game(game_file).walkthrough:
                raw_times.append(_timed(lambda c=command, e=engine: e.step(c)))
                env_times.append(_timed(lambda c=command: env.step(c)))
    return raw_times, env_times


def bench_resets(env: ALFWorldEnv, games: list[int], repeats: int) -> dict[str, list[float]]:
    """Seconds per repeated reset of one game: this env, the gym path, the direct path."""
    import textworld.gym
    from alfworld.agents.environment.alfred_tw_env import AlfredInfos

    times: dict[str, list[float]] = {"hiper": [], "gym": [], "direct": []}
    for game in games:
        game_file = env.game_files[game]
        infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
        env_id = textworld.gym.register_games(
            [str(game_file)],
            infos,
            batch_size=1,
            asynchronous=False,
            max_episode_steps=50,
            wrappers=[AlfredDemangler(shuffle=False), AlfredInfos],
        )
        gym_env = textworld.gym.make(env_id)
        engine = _raw_engine(game_file)
        env.reset(options={"game": game})  # load once: repeated resets are what is compared
        gym_env.reset()
        for _ in range(repeats):
            times["gym"].append(_timed(gym_env.reset))
            times["direct"].append(_timed(engine.reset))
            times["hiper"].append(_timed(lambda g=game: env.reset(options={"game": g})))
        gym_env.close()
    return times


def bench_vector(workers: int, steps: int, env_kwargs: dict) -> float:
    """Env steps per second of the async vector env with ``workers`` processes."""
    envs = gym.make_vec(
        "HiPER-ALFWorld-v0", num_envs=workers, vectorization_mode="async", **env_kwargs
    )
    rng = np.random.default_rng(0)
    _, infos = envs.reset(seed=0)
    envs.step([commands[0] for commands in infos["admissible_commands"]])  # warm caches
    start = time.perf_counter()
    for _ in range(steps):
        actions = [str(rng.choice(commands)) for commands in infos["admissible_commands"]]
        _, _, _, _, infos = envs.step(actions)
    elapsed = time.perf_counter() - start
    envs.close()
    return workers * steps / elapsed


def _ms(values: list[float]) -> str:
    return f"{1000 * statistics.mean(values):8.2f} {1000 * statistics.median(values):8.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="embedded")
    parser.add_argument("--split", default="train")
    parser.add_argument("--games", type=int, default=6, help="games to time (spread over the list)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vector-steps", type=int, default=100)
    args = parser.parse_args(argv)

    env = ALFWorldEnv(data_dir=args.data_dir, split=args.split, cache_size=args.games)
    games = list(np.linspace(0, env.num_games - 1, min(args.games, env.num_games), dtype=int))
    print(f"games: {len(games)} of {env.num_games} ({args.data_dir}, {args.split})\n")

    raw, ours = bench_steps(env, games, args.repeats)
    print("step (ms)              mean   median  steps")
    print(f"  raw engine       {_ms(raw)}  {len(raw)}")
    print(f"  HiPER-ALFWorld   {_ms(ours)}  {len(ours)}")
    speedup = statistics.mean(raw) / statistics.mean(ours)
    paired = statistics.median(r / o for o, r in zip(ours, raw, strict=True))
    print(f"  speed-up: {speedup:.1f}x (mean), {paired:.1f}x (median of paired steps)\n")

    resets = bench_resets(env, games, args.repeats)
    print("repeated reset (ms)    mean   median")
    print(f"  gym path         {_ms(resets['gym'])}   (textworld.gym: reload + reset)")
    print(f"  direct path      {_ms(resets['direct'])}   (PddlEnv.reset: re-translation)")
    print(f"  HiPER-ALFWorld   {_ms(resets['hiper'])}   (cached game, snapshot restore)")
    speedup = statistics.mean(resets["gym"]) / statistics.mean(resets["hiper"])
    print(f"  speed-up vs gym path: {speedup:.1f}x\n")
    env.close()

    print("async vector env   workers   env steps/s")
    env_kwargs = {"data_dir": args.data_dir, "split": args.split}
    for workers in (1, 2, 4):
        steps_per_second = bench_vector(workers, args.vector_steps, env_kwargs)
        print(f"                   {workers:7d}   {steps_per_second:11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
