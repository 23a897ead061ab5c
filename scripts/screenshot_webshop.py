"""Regenerate the README screenshot of the WebShop site, taken by headless Chromium.

Serves the embedded catalogue on an ephemeral 127.0.0.1 port, opens a goal, searches for the goal's
product the way a person would (typing into the search box) and saves the results page, or the item
page with the goal's first option selected.

Run:  python scripts/screenshot_webshop.py [--page results|item] [--goal-index 7] [--output PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hiper_gym.webshop.browser_env import Chromium
from hiper_gym.webshop.server import LocalServer, create_app
from hiper_gym.webshop.shop import WebShop

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "webshop_site.png"


def search_for_the_goal(driver, goal: dict) -> None:
    driver.find_element("id", "search_input").send_keys(goal["name"])
    driver.find_element("css selector", ".search-form button").click()


def open_the_goal_item(driver, goal: dict) -> None:
    driver.find_element("link text", goal["asin"]).click()
    options = goal["goal_options"]
    values = list(options.values()) if isinstance(options, dict) else list(options)
    if values:
        label = f"input[type=radio][value='{values[0]}'] + label"
        driver.find_element("css selector", label).click()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", choices=("results", "item"), default="results")
    parser.add_argument("--goal-index", type=int, default=7)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()

    shop = WebShop()
    goal = shop.goals[args.goal_index]
    server = LocalServer(create_app(shop))
    browser = Chromium(window_size=(args.width, args.height))
    try:
        browser.driver.get(f"{server.url}/new/{args.goal_index}")
        search_for_the_goal(browser.driver, goal)
        if args.page == "item":
            open_the_goal_item(browser.driver, goal)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        browser.driver.save_screenshot(str(args.output))
    finally:
        browser.quit()
        server.close()
    print(f"wrote {args.output} ({args.page} page of goal {args.goal_index})")


if __name__ == "__main__":
    main()
