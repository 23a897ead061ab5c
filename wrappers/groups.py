"""Groups of env copies that play the same game, for group-relative learners (GRPO, GiGPO).

A group is ``group_size`` consecutive sub-envs of a vector env reset with the same seed. The
suite's envs draw the game (and anything else random) from ``np_random`` at reset, so equal seeds
give equal games and equal initial states. Episodes are collected to completion, so the vector env
does not reset anything by itself (``AutoresetMode.DISABLED``); the learner resets all sub-envs
at once with :func:`group_seeds` for the next batch of groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode


def group_seeds(num_groups: int, group_size: int, base_seed: int = 0) -> list[int]:
    """Reset seeds for ``num_groups`` groups of ``group_size`` copies: ``[s0]*G + [s1]*G + ...``.

    Args:
        num_groups: Number of groups (distinct games).
        group_size: Copies per group (``G``).
        base_seed: Seed of the first group; group ``k`` gets ``base_seed + k``.

    Returns:
        One seed per sub-env, for ``vector_env.reset(seed=...)``.

    Example:
        >>> group_seeds(3, 2, base_seed=10)
        [10, 10, 11, 11, 12, 12]
    """
    if num_groups < 1 or group_size < 1:
        raise ValueError(f"num_groups and group_size must be >= 1, got {num_groups}, {group_size}")
    return [base_seed + group for group in range(num_groups) for _ in range(group_size)]


def make_group_vec(
    env_id: str,
    num_groups: int,
    group_size: int,
    *,
    vectorization_mode: str = "sync",
    wrappers: Sequence[Callable[[gym.Env], gym.Wrapper]] = (),
    vector_kwargs: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """``gym.make_vec`` for ``num_groups * group_size`` sub-envs that are reset in groups.

    The vector env does not autoreset (``AutoresetMode.DISABLED``): step until every episode of
    the batch has ended, then call ``envs.reset(seed=group_seeds(num_groups, group_size, s))``
    with a new ``s``. Group ``k`` is sub-envs ``[k * group_size, (k + 1) * group_size)``.

    Args:
        env_id: A registered id such as ``"HiPER-ALFWorld-v0"``.
        num_groups: Number of groups.
        group_size: Copies per group.
        vectorization_mode: ``"sync"`` or ``"async"``.
        wrappers: Applied to each sub-env, innermost first (e.g. ``[PlanExecute]``).
        vector_kwargs: Extra arguments of the vector env (``shared_memory=False`` for async
            text envs avoids copying ``max_length`` characters per sub-env and step).
        **env_kwargs: Passed to each sub-env's constructor.

    Returns:
        The vector env.

    Example:
        >>> import hiper_gym  # noqa: F401
        >>> envs = make_group_vec("HiPER-ALFWorld-v0", num_groups=2, group_size=4)
        >>> obs, infos = envs.reset(seed=group_seeds(2, 4, base_seed=7))  # doctest: +SKIP
        >>> len(set(infos["gamefile"][:4])), len(set(infos["gamefile"][4:]))  # doctest: +SKIP
        (1, 1)
        >>> envs.close()
    """
    vector_kwargs = {"autoreset_mode": AutoresetMode.DISABLED, **(vector_kwargs or {})}
    return gym.make_vec(
        env_id,
        num_envs=num_groups * group_size,
        vectorization_mode=vectorization_mode,
        vector_kwargs=vector_kwargs,
        wrappers=list(wrappers),
        **env_kwargs,
    )
