"""Train sb3-contrib's MaskablePPO on ALFWorld's embedded games through the SB3 bridge.

The text env becomes an SB3 env in two wrappers: ``DiscreteCommands`` turns the admissible commands
into ``Discrete(K_max)`` with ``action_masks()``, and ``EncodeText`` encodes the task, the
observation, a short history and every candidate command with a hashing bag of words (no
download), plus each command's similarity to the task, the observation and the history.

The policy is MaskablePPO's ``MultiInputPolicy`` with one change: the action logits come from a
single small network that scores each (state, command) pair (DRRN-style), so what is learned about
one command index carries over to every index. A plain MLP over the flattened observation has to
learn each of the K_max indices separately, and it did not beat random in this budget (below).

Run (CPU, a few minutes)::

    python examples/sb3_maskable_ppo.py
    python examples/sb3_maskable_ppo.py --total-timesteps 20000 --eval-episodes 100

Measured, 25 Nov 2026 (36 embedded train games as generated at that time, 50-step limit; seed 0;
the same 50 evaluation episodes, seeds 10000-10049, for every policy; 2 CPU cores shared by five
developers, 11-16 min per run):

    ======================================================  =============
    policy                                                  success
    ======================================================  =============
    uniform random over the admissible commands (masked)    0.02 (1/50)
    MaskablePPO, stock ``MultiInputPolicy``, 8,192 steps    0.00 (0/50)
    MaskablePPO, command scorer, 8,192 steps (defaults)     0.00 (0/50)
    MaskablePPO, command scorer, ``--ent-coef 0.05
    --n-epochs 4``, 8,192 steps                             0.00 (0/50)
    ======================================================  =============

So far MaskablePPO does **not** beat the random masked policy in a CPU budget of minutes:
8,192 steps are about 170 episodes, of which a random policy wins only 2-5 %, and the only reward
is the win, so PPO sees a handful of successes and drifts into loops. Larger budgets
(``--total-timesteps 100000`` and up) have not been measured yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro
from hiper_gym.wrappers import DiscreteCommands, EncodeText, HashingBagOfWords
from sb3_contrib.common.maskable.policies import MaskableMultiInputActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

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
    n_epochs: int = 10
    """PPO epochs per rollout"""
    learning_rate: float = 5e-4
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
    hidden: int = 64
    """width of the state summary and of the command scorer"""
    command_scorer: bool = True
    """score (state, command) pairs with one shared network; False: the stock MLP policy"""


class CommandScorer(BaseFeaturesExtractor):
    """Features = one score per command slot (a shared MLP on state and command) + a state summary.

    Args:
        observation_space: ``EncodeText``'s ``Dict`` space with ``command_similarities=True``.
        hidden: Width of the state summary and of the scorer.
    """

    def __init__(self, observation_space: gym.spaces.Dict, hidden: int = 64) -> None:
        dim = observation_space["task"].shape[0]
        max_commands = observation_space["similarities"].shape[0] // 3
        super().__init__(observation_space, features_dim=max_commands + hidden)
        self.max_commands, self.dim = max_commands, dim
        self.state = nn.Sequential(nn.Linear(3 * dim, hidden), nn.Tanh())
        self.scorer = nn.Sequential(
            nn.Linear(hidden + dim + 3, hidden), nn.Tanh(), nn.Linear(hidden, 1)
        )

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores ``(batch, max_commands)`` and state summary ``(batch, hidden)``, concatenated."""
        state = self.state(torch.cat([obs["task"], obs["observation"], obs["history"]], dim=-1))
        commands = obs["commands"].view(-1, self.max_commands, self.dim)
        similarities = obs["similarities"].view(-1, 3, self.max_commands).transpose(1, 2)
        pairs = torch.cat(
            [state.unsqueeze(1).expand(-1, self.max_commands, -1), commands, similarities], dim=-1
        )
        return torch.cat([self.scorer(pairs).squeeze(-1), state], dim=-1)


class FirstColumns(nn.Module):
    """The action head: the first ``n`` features are the logits."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """The logits."""
        return latent[..., : self.n]


class CommandScoringPolicy(MaskableMultiInputActorCriticPolicy):
    """MaskablePPO's multi-input policy whose logits are :class:`CommandScorer`'s scores."""

    def _build(self, lr_schedule) -> None:  # noqa: ANN001 - SB3's Schedule type
        super()._build(lr_schedule)
        self.action_net = FirstColumns(int(self.action_space.n))
        # Rebuild the optimizer so it holds exactly the parameters in use.
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )


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
    policy, policy_kwargs = "MultiInputPolicy", {}
    if args.command_scorer:
        policy = CommandScoringPolicy
        policy_kwargs = {
            "features_extractor_class": CommandScorer,
            "features_extractor_kwargs": {"hidden": args.hidden},
            "net_arch": {"pi": [], "vf": [args.hidden]},
        }
    model = MaskablePPO(
        policy,
        env,
        policy_kwargs=policy_kwargs,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
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
