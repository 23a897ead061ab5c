r"""Time one HiPER iteration: rollout generation, env steps, old/ref log-probs, update; turns/s.

Takes the same arguments as ``hiper-gym train`` (a preset, then flags), plus ``--warmup N``
(untimed iterations first, default 1: games load and caches fill) and ``--measure N`` (timed
iterations, default 1). Examples::

    python benchmarks/iteration_time.py                       # tiny model, CPU (tiny-cpu preset)
    python benchmarks/iteration_time.py tiny-cpu --num-envs 8 --max-turns 10
    python benchmarks/iteration_time.py paper --model qwen2.5-1.5b-shape --device cuda \
        --constrained-decoding --num-envs 128 --max-turns 50 --gradient-checkpointing

The 1.5B shape has random weights over the word-level tokenizer (no download), so constrained
decoding is needed to keep samples inside the tokenizer. Nothing is written to disk.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch
from hiper_gym.agents import hiper
from hiper_gym.agents.models import count_parameters


def pop_int_flag(argv: list[str], name: str, default: int) -> int:
    """Remove ``name VALUE`` from ``argv`` and return VALUE (or ``default``)."""
    if name not in argv:
        return default
    index = argv.index(name)
    value = int(argv[index + 1])
    del argv[index : index + 2]
    return value


def main(argv: list[str]) -> int:
    warmup = pop_int_flag(argv, "--warmup", 1)
    measure = pop_int_flag(argv, "--measure", 1)
    args = dataclasses.replace(hiper.parse_args(argv), tensorboard=False, progress=False)
    hiper.validate(args)
    started = time.perf_counter()
    learner = hiper.build_learner(args)
    setup_seconds = time.perf_counter() - started
    print(
        f"model={args.model} critic={args.critic} device={args.device} dtype={args.dtype} "
        f"threads={torch.get_num_threads()} envs={args.num_envs} max_turns={args.max_turns} "
        f"actor params={count_parameters(learner.models.actor) / 1e6:.2f}M "
        f"setup {setup_seconds:.1f}s"
    )
    defer = hiper.DeferredInterrupt()
    for _ in range(warmup):
        hiper.train_iteration(learner, defer)
    for index in range(measure):
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        metrics = hiper.train_iteration(learner, defer)
        print_split(index, metrics, args.device)
    return 0


def print_split(index: int, metrics: dict[str, float], device: str) -> None:
    """One iteration's time split as a table."""
    parts = [
        ("rollout: generation", metrics["time/rollout_generation"]),
        ("rollout: env steps", metrics["time/env"]),
        ("rollout: bookkeeping", metrics["time/bookkeeping"]),
        ("old/ref log-probs + values", metrics["time/scoring"]),
        ("update (HAE + PPO)", metrics["time/update"]),
    ]
    total = metrics["time/iteration"]
    rollout = sum(seconds for name, seconds in parts[:3])
    env_share = (metrics["time/env"] + metrics["time/bookkeeping"]) / max(rollout, 1e-9)
    print(f"\niteration {index + 1}: {int(metrics['turns'])} turns in {total:.2f}s")
    print(f"{'phase':30s} {'seconds':>9s} {'share':>7s}")
    for name, seconds in parts:
        print(f"{name:30s} {seconds:9.2f} {seconds / total:7.1%}")
    print(f"{'total':30s} {total:9.2f}")
    print(f"turns/s: {metrics['time/turns_per_second']:.2f}")
    print(f"env + bookkeeping share of the rollout: {env_share:.1%}")
    if metrics["time/env_in_workers"]:
        print(
            f"env steps and text work done in worker processes meanwhile: "
            f"{metrics['time/env_in_workers']:.2f}s"
        )
    if device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
