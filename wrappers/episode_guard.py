"""``EpisodeGuard``: stepping a finished episode is an error, whoever ended it."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
from gymnasium.error import ResetNeeded


class EpisodeEndedError(ResetNeeded, RuntimeError):
    """``step`` was called after ``terminated`` or ``truncated`` without a ``reset`` in between."""


class EpisodeGuard(gym.Wrapper[Any, Any, Any, Any], gym.utils.RecordConstructorArgs):
    """Raise a clear error when ``step`` is called on an episode that has already ended.

    Gymnasium's ``TimeLimit`` truncates an episode but lets further steps through, and the env
    underneath cannot tell (``gym.make`` hides the step limit from it), so a rollout loop that
    forgets a finished env silently keeps playing it. The suite's environments are registered with
    this wrapper outermost, after ``TimeLimit``; ``reset`` re-arms it. Vector envs reset finished
    copies themselves (or, with autoreset disabled, require it), so they never trip it.

    Example:
        >>> import gymnasium as gym
        >>> env = EpisodeGuard(gym.make("CartPole-v1", max_episode_steps=1))
        >>> _ = env.reset(seed=0)
        >>> _ = env.step(0)
        >>> env.step(0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
            ...
        EpisodeEndedError: step() called after the episode ended (truncated); call reset() first
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        """Wrap ``env``.

        Args:
            env: The environment to guard.
        """
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)
        self._ended_by: str | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the inner env and allow steps again."""
        self._ended_by = None
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the inner env, or raise :class:`EpisodeEndedError` if its episode has ended."""
        if self._ended_by is not None:
            raise EpisodeEndedError(
                f"step() called after the episode ended ({self._ended_by}); call reset() first"
            )
        observation, reward, terminated, truncated, info = super().step(action)
        if terminated or truncated:
            self._ended_by = "terminated" if terminated else "truncated"
        return observation, reward, terminated, truncated, info
