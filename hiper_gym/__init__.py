"""hiper-gym: Gymnasium text-agent environments with a semi-MDP layer and HiPER's learners.

Importing the package registers its environments with Gymnasium:

Example:
    >>> import gymnasium as gym
    >>> import hiper_gym  # noqa: F401  (registers the HiPER-* ids)
    >>> env = gym.make("HiPER-ALFWorld-v0")  # doctest: +SKIP

The ids are also reachable without the import through ``gym.make("hiper_gym:HiPER-ALFWorld-v0")``.
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.envs.registration import WrapperSpec
from gymnasium.error import ResetNeeded

__version__ = "0.1.0"


class ResetNeededError(ResetNeeded, RuntimeError):
    """``step`` was called on an env that has no playable episode: call ``reset()`` first.

    The suite's envs raise it before their first ``reset``, after the episode they play has ended
    and after a ``reset`` that raised: a failed reset never leaves the previous episode playable.
    It is Gymnasium's ``ResetNeeded`` (what ``OrderEnforcing`` raises) and a ``RuntimeError``.
    """


class DataError(ValueError):
    """An env's data (a game file, a catalogue, a ``data_dir`` tree) that it cannot use.

    ALFWorld's ``GameDataError`` and WebShop's ``WebShopDataError`` are its kinds, so a caller
    that builds either env catches one class (the message names the file or the split).
    """


#: id -> (entry point, step limit)
_ENVS: dict[str, tuple[str, int]] = {
    "HiPER-ALFWorld-v0": ("hiper_gym.alfworld.env:ALFWorldEnv", 50),
    "HiPER-WebShop-v0": ("hiper_gym.webshop.text_env:WebShopTextEnv", 15),
    "HiPER-WebShopBrowser-v0": ("hiper_gym.webshop.browser_env:WebShopBrowserEnv", 15),
}

#: Outermost wrapper of every ``gym.make``: stepping an ended episode (won, bought or cut off by
#: ``TimeLimit``) raises ``EpisodeEndedError`` instead of silently playing on.
_EPISODE_GUARD = WrapperSpec(
    name="EpisodeGuard",
    entry_point="hiper_gym.wrappers.episode_guard:EpisodeGuard",
    kwargs={},
)


def register_envs() -> None:
    """Register the suite's environments with Gymnasium (idempotent).

    Entry points are strings, so registering imports neither the ALFWorld engine nor Selenium.

    The envs are registered with ``disable_env_checker=True``: Gymnasium 1.4's
    ``PassiveEnvChecker`` marks its first ``reset`` as checked before calling it, so when that
    reset raises (a corrupt game file, a bad option) every later ``step`` of the env raises
    ``TypeError: cannot unpack non-iterable NoneType object``, even after good resets. The suite
    runs the full ``gymnasium.utils.env_checker.check_env`` on every env in its tests instead;
    ``gym.make(id, disable_env_checker=False)`` still adds the passive checker.
    """
    for env_id, (entry_point, max_episode_steps) in _ENVS.items():
        if env_id not in gym.envs.registry:
            gym.register(
                id=env_id,
                entry_point=entry_point,
                max_episode_steps=max_episode_steps,
                disable_env_checker=True,
                additional_wrappers=(_EPISODE_GUARD,),
            )


ENV_IDS: tuple[str, ...] = tuple(_ENVS)

register_envs()
