"""Parity: the browser env (DOM read from Chromium) and the text env (core renderer) agree exactly.

Seeded random episodes go through both envs with the same goal and the same actions; every step's
observation, reward, termination and whole ``info`` (admissible commands included) must be equal.
The text env never builds HTML and the browser env never asks the core for text, so this checks the
templates, the site's routing and the browser env's HTML-to-text conversion against the core.
"""

from __future__ import annotations

import random

import pytest

from hiper_gym.webshop.browser_env import WebShopBrowserEnv, chromium_available
from hiper_gym.webshop.shop import WebShop
from hiper_gym.webshop.text_env import SEARCH_TEMPLATE, WebShopTextEnv

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs chromium and chromedriver"),
]

EPISODES = 20
STEPS_PER_EPISODE = 7
#: Actions the random policy mixes in: invalid ones, case variants, an option-free purchase path.
ODD_ACTIONS = ("click[SEARCH]", "click[Next >]", "look", "click[nothing here]", "search[]")


@pytest.fixture(scope="module")
def shop() -> WebShop:
    return WebShop()  # embedded catalogue: 600 products, 2,086 goals


def random_action(info: dict, goal: dict, rng: random.Random) -> str:
    """Random admissible command, biased towards the goal's product so that purchases happen."""
    commands = info["admissible_commands"]
    goal_click = f"click[{goal['asin'].lower()}]"
    roll = rng.random()
    if roll < 0.1:
        return rng.choice(ODD_ACTIONS)
    if goal_click in commands and roll < 0.5:
        return goal_click
    if "click[buy now]" in commands and roll < 0.35:
        return "click[buy now]"
    command = rng.choice(commands) if commands else SEARCH_TEMPLATE
    if command == SEARCH_TEMPLATE:
        words = goal["name"].split()
        return f"search[{' '.join(rng.sample(words, min(len(words), rng.randint(2, 6))))}]"
    return command


def run_parity_episodes(shop: WebShop, mode: str, episodes: int, seed: int) -> dict[str, int]:
    text_env = WebShopTextEnv(shop=shop, split="all", observation_mode=mode)
    browser_env = WebShopBrowserEnv(shop=shop, split="all", observation_mode=mode)
    rng = random.Random(seed)
    counts = {"steps": 0, "purchases": 0, "scored": 0, "pages": set()}
    try:
        for episode in range(episodes):
            text_reset = text_env.reset(seed=seed + episode)
            assert browser_env.reset(seed=seed + episode) == text_reset, f"reset of {episode}"
            info = text_reset[1]
            goal = shop.goals[info["goal_index"]]
            for step in range(STEPS_PER_EPISODE):
                action = random_action(info, goal, rng)
                expected = text_env.step(action)
                actual = browser_env.step(action)
                assert actual == expected, f"episode {episode}, step {step}: {action!r}"
                info = expected[4]
                counts["steps"] += 1
                counts["pages"].add(info["page"])
                if expected[2]:
                    counts["purchases"] += 1
                    counts["scored"] += expected[1] > 0
                    break
    finally:
        browser_env.close()
    return counts


def test_twenty_random_episodes_match_in_text_mode(shop):
    counts = run_parity_episodes(shop, "text", EPISODES, seed=100)
    # The episodes must have exercised every page kind and some scored purchases.
    assert counts["pages"] == {"search", "results", "item", "item_sub", "done"}
    assert counts["purchases"] >= 3 and counts["scored"] >= 1
    assert counts["steps"] >= EPISODES * 3


def test_random_episodes_match_in_text_rich_mode(shop):
    counts = run_parity_episodes(shop, "text_rich", 8, seed=500)
    assert {"results", "item"} <= counts["pages"]


def test_oracle_episodes_on_the_real_sample_match(sample_shop, purchase_actions):
    """Real Amazon text (odd characters, long descriptions, real options) through both envs."""
    text_env = WebShopTextEnv(shop=sample_shop, split="all")
    browser_env = WebShopBrowserEnv(shop=sample_shop, split="all")
    rewards = []
    try:
        for goal_index in (0, 7, 42, 99):
            detours = ("click[features]", "click[< prev]", "click[description]", "click[< prev]")
            actions = purchase_actions(sample_shop.goals[goal_index], detours)
            reset_options = {"goal_index": goal_index}
            expected_reset = text_env.reset(options=reset_options)
            assert browser_env.reset(options=reset_options) == expected_reset
            for action in actions:
                expected = text_env.step(action)
                assert browser_env.step(action) == expected, (goal_index, action)
            assert expected[2], "the oracle bought the product"
            rewards.append(expected[1])
    finally:
        browser_env.close()
    assert max(rewards) > 0.5
