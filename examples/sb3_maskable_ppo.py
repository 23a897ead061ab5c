"""Train sb3-contrib's MaskablePPO on ALFWorld's embedded games through the SB3 bridge.

The text env becomes an SB3 env in two wrappers: ``DiscreteCommands`` turns the admissible commands
into ``Discrete(K_max)`` with ``action_masks()``, and ``EncodeText`` encodes the task, the
observation, a short history and every candidate command with a hashing bag of words (no
download), plus each command's similarity to the task and to the observation.

Run (CPU, a few minutes)::

    python examples/sb3_maskable_ppo.py
    python examples/sb3_maskable_ppo.py --total-timesteps 20000 --eval-episodes 100

Measured (``HiPER-ALFWorld-v0`` defaults: 36 embedded train games, 50 steps; seed 0; 2 shared CPU
cores; evaluation on the same 60 episode seeds for both policies):

    ==========================  =========
    policy                      success
    ==========================  =========
    uniform random (masked)     see below
    MaskablePPO, 10,240 steps   see below
    ==========================  =========
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import tyro
from hiper_gym.wrappers import DiscreteCommands, EncodeText, HashingBagOfWords

import hiper_gym  # noqa: F401  (registers HiPER-ALFWorld-v0)


@dataclass
class Args:
    """Command-line options (``--help`` lists them)."""

    seed: int = 0
    """seed of the environment, the policy and the evaluation draws"""
    total_timesteps: int = 10_240
    """environment steps of PPO training"""
    n_steps: int = 512
    """rollout length between PPO updates"""
    batch_size: int = 128
    """PPO minibatch size"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    gamma: float = 0.99
    """discount factor"""
    ent_coef: float = 0.01
    """entropy bonus"""
    max_commands: int = 64
    """K_max: size of the discrete action space"""
    encoder_dim: int = 128
    """hash buckets of the bag-of-words encoder"""
    eval_episodes: int = 60
    """evaluation episodes for each policy (same episode seeds for both)"""
    eval_seed: int = 10_000
    """first episode seed of the evaluation"""


def make_env(args: Args) -> gym.Env:
    """ALFWorld's embedded default games, as an SB3-ready env."""
    env = DiscreteCommands(gym.make("HiPER-ALFWorld-v0"), max_commands=args.max_commands)
    return EncodeText(env, HashingBagOfWords(dim=args.encoder_dim), command_similarities=True)


Policy = Callable[[dict[str, np.ndarray], np.ndarray], int]


def success_rate(env: gym.Env, policy: Policy, episodes: int, first_seed: int) -> float:
    """Fraction of ``episodes`` won, episode ``i`` reset with seed ``first_seed + i``."""
    wins = 0
    for episode in range(episodes):
        obs, info = env.reset(seed=first_seed + episode)
        terminated = truncated = False
        while not (terminated or truncated):
            mask = env.get_wrapper_attr("action_masks")()
            obs, _, terminated, truncated, info = env.step(policy(obs, mask))
        wins += bool(info["won"])
    return wins / episodes


def main(args: Args) -> dict[str, float]:
    from sb3_contrib import MaskablePPO

    env = make_env(args)
    rng = np.random.default_rng(args.seed)

    def random_policy(obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        return int(rng.choice(np.flatnonzero(mask)))

    started = time.perf_counter()
    random_success = success_rate(env, random_policy, args.eval_episodes, args.eval_seed)
    print(f"uniform random (masked): success {random_success:.3f}")

    env.reset(seed=args.seed)
    model = MaskablePPO(
        "MultiInputPolicy",
        env,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        ent_coef=args.ent_coef,
        seed=args.seed,
        verbose=0,
    )
    model.learn(total_timesteps=args.total_timesteps)

    def ppo_policy(obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        action, _ = model.predict(obs, action_masks=mask, deterministic=False)
        return int(action)

    ppo_success = success_rate(env, ppo_policy, args.eval_episodes, args.eval_seed)
    minutes = (time.perf_counter() - started) / 60
    print(f"MaskablePPO after {args.total_timesteps} steps: success {ppo_success:.3f}")
    print(f"total time {minutes:.1f} min")
    env.close()
    return {"random": random_success, "ppo": ppo_success}


if __name__ == "__main__":
    main(tyro.cli(Args))
