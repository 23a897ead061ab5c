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

__version__ = "0.1.0"

ENV_IDS: tuple[str, ...] = (
    "HiPER-ALFWorld-v0",
    "HiPER-WebShop-v0",
    "HiPER-WebShopBrowser-v0",
)


def register_envs() -> None:
    """Register the suite's environments with Gymnasium (idempotent).

    Entry points are strings, so registering imports neither the ALFWorld engine nor Selenium.
    """
    registry = gym.envs.registry
    if "HiPER-ALFWorld-v0" not in registry:
        gym.register(
            id="HiPER-ALFWorld-v0",
            entry_point="hiper_gym.alfworld.env:ALFWorldEnv",
            max_episode_steps=50,
        )
    if "HiPER-WebShop-v0" not in registry:
        gym.register(
            id="HiPER-WebShop-v0",
            entry_point="hiper_gym.webshop.text_env:WebShopTextEnv",
            max_episode_steps=15,
        )
    if "HiPER-WebShopBrowser-v0" not in registry:
        gym.register(
            id="HiPER-WebShopBrowser-v0",
            entry_point="hiper_gym.webshop.browser_env:WebShopBrowserEnv",
            max_episode_steps=15,
        )


register_envs()
