"""``HiPER-WebShopBrowser-v0``: the WebShop site driven through headless Chromium with Selenium.

The env starts the Flask site (:mod:`hiper_gym.webshop.server`) on an ephemeral 127.0.0.1 port and a
headless Chromium under chromedriver. Each action is performed the way a person would: ``search[q]``
types ``q`` into the search box and presses ``Search``; ``click[x]`` clicks the button, product link
or option radio whose text is ``x``. The observation is read back from the page Chromium shows: its
visible text nodes, classified by their element (button, option label, product link) exactly as
upstream's HTML-to-text conversion does, then joined like the text env. The score is read from the
done page. Observations, admissible commands and rewards therefore equal the text env's
(``HiPER-WebShop-v0``) for the same goal and actions; ``tests/webshop/test_parity.py`` checks it.

Chromium runs offline: every host but 127.0.0.1 fails to resolve, background networking is off,
and Selenium Manager never runs (the driver path is explicit). If Chromium or chromedriver dies, the
step raises :class:`BrowserCrashedError`; the next ``reset()`` starts a fresh browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import gymnasium as gym
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options as ChromeOptions
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.remote.webelement import WebElement
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from hiper_gym.spaces import to_text_charset
from hiper_gym.webshop.render import BUTTON, LABEL, LINK, SEP
from hiper_gym.webshop.server import LocalServer, create_app
from hiper_gym.webshop.shop import parse_action
from hiper_gym.webshop.text_env import MAX_ACTION_LENGTH, SEARCH_TEMPLATE, WebShopTextEnv

#: Where Debian's ``chromium`` and ``chromium-driver`` packages install the browser and its driver.
CHROMIUM_BINARY = "/usr/bin/chromium"
CHROMEDRIVER_PATH = "/usr/bin/chromedriver"

#: Headless, sandbox-free (containers) and offline: no background traffic or component updates, and
#: every host except loopback fails to resolve at once (spec §4.4-4.5: a page that names an
#: unreachable host otherwise stalls each load for ~5 s).
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)
#: Seconds to wait for a page after an action before declaring the browser stuck.
PAGE_TIMEOUT_S = 20.0
#: Queries up to this length are typed key by key; longer ones (or ones with characters beyond the
#: BMP, which chromedriver cannot type) are pasted into the box, since typing costs ~1 ms a key.
MAX_TYPED_QUERY_LENGTH = 64
#: The characters BeautifulSoup (upstream's HTML parser) treats as whitespace.
_BS4_WHITESPACE = " \n\t\x0c\r"

# Reads everything an observation needs in one round trip: the page's text nodes in document order
# (upstream's ``soup.findAll(text=True)`` minus style/script/head/title/meta, hidden CSS included),
# each with its role, then the clickables in upstream's ``get_available_actions`` order (buttons,
# product links, radio values), the search bar, the page-state block and the score.
_READ_PAGE_JS = r"""
const skipped = new Set(["STYLE", "SCRIPT", "HEAD", "TITLE", "META", "NOSCRIPT"]);
const walker = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT);
const nodes = [];
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const parent = node.parentElement;
  if (!parent || skipped.has(parent.tagName)) continue;
  let role = "text";
  if (parent.tagName === "BUTTON") role = "button";
  else if (parent.tagName === "LABEL") role = "label";
  else if (parent.classList.contains("product-link")) role = "link";
  nodes.push([node.nodeValue, role, parent.tagName === "PRE"]);
}
const lower = (el) => el.textContent.trim().toLowerCase();
const clickables = [].concat(
  Array.from(document.querySelectorAll(".btn"), lower),
  Array.from(document.querySelectorAll(".product-link"), lower),
  Array.from(document.querySelectorAll("input[type=radio]"), (el) => el.value));
const state = document.getElementById("page-state");
const reward = document.getElementById("reward-value");
const instruction = document.querySelector(".instruction");
return {
  nodes: nodes,
  clickables: clickables,
  hasSearchBar: document.getElementById("search_input") !== null,
  state: state ? state.textContent : null,
  reward: reward ? reward.textContent : null,
  instruction: instruction ? instruction.textContent : null,
  url: location.href,
};
"""
# Finds the element an action clicks (same order and first-wins rule as the clickables above) and
# marks the current document, so that the next page is recognised by the mark's absence.
_FIND_AND_MARK_JS = r"""
const target = arguments[0];
const lower = (el) => el.textContent.trim().toLowerCase();
const found =
  Array.from(document.querySelectorAll(".btn")).find((el) => lower(el) === target) ||
  Array.from(document.querySelectorAll(".product-link")).find((el) => lower(el) === target) ||
  Array.from(document.querySelectorAll("input[type=radio]")).find((el) => el.value === target);
document.documentElement.dataset.hiperStale = "1";
return found || null;
"""
_SET_VALUE_JS = "arguments[0].value = arguments[1];"
_MARK_JS = 'document.documentElement.dataset.hiperStale = "1";'
_NEW_PAGE_READY_JS = (
    "return document.readyState === 'complete' && "
    "document.documentElement.dataset.hiperStale === undefined;"
)


class BrowserEnvError(RuntimeError):
    """The browser could not perform an action; the next ``reset()`` starts a fresh browser."""


class BrowserCrashedError(BrowserEnvError):
    """Chromium or chromedriver stopped answering; the next ``reset()`` starts a fresh browser."""


def chromium_available() -> bool:
    """Whether Chromium and chromedriver are installed where the env looks for them."""
    return Path(CHROMIUM_BINARY).exists() and shutil.which(CHROMEDRIVER_PATH) is not None


class Chromium:
    """One headless, offline Chromium under chromedriver with a throw-away profile directory.

    Args:
        window_size: The viewport in pixels (matters for screenshots only).

    Raises:
        RuntimeError: Chromium or chromedriver is not installed.

    Example:
        >>> browser = Chromium()  # doctest: +SKIP
        >>> browser.driver.get("http://127.0.0.1:3000/")  # doctest: +SKIP
        >>> browser.quit()  # doctest: +SKIP
    """

    def __init__(self, window_size: tuple[int, int] = (1280, 900)) -> None:
        if not chromium_available():
            raise RuntimeError(
                f"the browser env needs {CHROMIUM_BINARY} and {CHROMEDRIVER_PATH}; on Debian: "
                "apt-get install --no-install-recommends chromium chromium-driver"
            )
        self.profile_dir = Path(tempfile.mkdtemp(prefix="hiper-gym-chromium-"))
        options = ChromeOptions()
        options.binary_location = CHROMIUM_BINARY
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={window_size[0]},{window_size[1]}")
        options.add_argument(f"--user-data-dir={self.profile_dir}")
        # An explicit driver path keeps Selenium Manager (it would try to download) from running.
        service = ChromeService(CHROMEDRIVER_PATH)
        try:
            self.driver = webdriver.Chrome(service=service, options=options)
        except WebDriverException:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(PAGE_TIMEOUT_S)
        self.driver.set_script_timeout(PAGE_TIMEOUT_S)

    def browser_process_ids(self) -> list[int]:
        """Ids of this instance's Chromium processes (Linux: found by their profile directory).

        The first one is the browser process itself; the others are its renderers and helpers.
        """
        marker = f"--user-data-dir={self.profile_dir}".encode()
        found: list[tuple[bool, int]] = []
        for cmdline_file in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                arguments = cmdline_file.read_bytes().split(b"\0")
            except OSError:
                continue  # the process ended while we looked
            if marker in arguments:
                is_helper = any(argument.startswith(b"--type=") for argument in arguments)
                found.append((is_helper, int(cmdline_file.parent.name)))
        return [pid for _, pid in sorted(found)]

    def is_alive(self) -> bool:
        """Whether the browser still answers a trivial script."""
        try:
            return self.driver.execute_script("return 1;") == 1
        except (WebDriverException, Urllib3HTTPError, OSError):
            return False

    def quit(self) -> None:
        """Stop the browser and its driver, even if either has died, and delete the profile."""
        try:
            self.driver.quit()
        except (WebDriverException, Urllib3HTTPError, OSError):
            self.driver.service.stop()  # the browser is gone: at least end chromedriver
        self._end_processes()
        for _ in range(5):  # a helper process may still be flushing into the profile
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            if not self.profile_dir.exists():
                break
            time.sleep(0.1)

    def _end_processes(self, grace_s: float = 3.0) -> None:
        """Wait for this instance's processes to exit; kill those that do not (e.g. orphans)."""
        # A browser whose chromedriver was killed outlives it, and a quitting one still writes to
        # its profile for a moment. Only this instance's processes are touched: they are the ones
        # started with its own profile directory.
        deadline = time.monotonic() + grace_s
        while self.browser_process_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.browser_process_ids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        while self.browser_process_ids() and time.monotonic() < deadline + grace_s:
            time.sleep(0.05)


class WebShopBrowserEnv(WebShopTextEnv):
    """WebShop through a real headless Chromium, step for step equal to ``HiPER-WebShop-v0``.

    Same goals, actions, observations and scores as the text env; a step takes ~0.1-0.2 s here
    (a real page load) instead of ~0.1 ms.

    It takes every argument of :class:`~hiper_gym.webshop.text_env.WebShopTextEnv` (goal sampling,
    spaces and ``info`` keys are the text env's). The site and the browser start on the first
    ``reset()``; ``close()`` stops both.

    Invalid actions (malformed, too long, a click on something not on the page, ``click[search]``)
    are no-ops flagged ``info["is_action_valid"] = False``, as in the text env; they do not touch
    the page, but the page is read again so that a dead browser is noticed on that step.

    Example:
        >>> import gymnasium as gym
        >>> import hiper_gym  # noqa: F401
        >>> env = gym.make("HiPER-WebShopBrowser-v0")  # doctest: +SKIP
        >>> obs, info = env.reset(seed=0, options={"goal_index": 3})  # doctest: +SKIP
        >>> obs, reward, terminated, truncated, info = env.step("search[soap]")  # doctest: +SKIP
        >>> info["page"], info["is_action_valid"]  # doctest: +SKIP
        ('results', True)
        >>> env.close()  # doctest: +SKIP
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 5}  # ~ steps per second

    def __init__(self, *args: Any, render_mode: str | None = None, **kwargs: Any) -> None:
        """Create the env; the arguments are :class:`~hiper_gym.webshop.text_env.WebShopTextEnv`'s.

        ``render_mode`` may also be ``"rgb_array"``: ``render()`` then returns a screenshot.
        """
        text_render_mode = None if render_mode == "rgb_array" else render_mode
        super().__init__(*args, render_mode=text_render_mode, **kwargs)
        self.render_mode = render_mode
        self.server: LocalServer | None = None
        self.browser: Chromium | None = None
        self._available: dict[str, Any] = {"has_search_bar": False, "clickables": []}
        self._task = ""
        self._page_kind = "search"
        self._reward_text: str | None = None

    # ----------------------------------------------------------------- browser and site lifecycle
    def _ensure_running(self) -> None:
        if self.server is None:
            self.server = LocalServer(create_app(self.shop))
        if self.browser is not None and not self.browser.is_alive():
            self.browser.quit()
            self.browser = None
        if self.browser is None:
            try:
                self.browser = Chromium()
            except (WebDriverException, Urllib3HTTPError, OSError) as error:
                raise BrowserCrashedError(f"headless Chromium did not start: {error}") from error

    def _failed(self, during: str, error: BaseException) -> BrowserEnvError:
        """The error to raise for a failed browser call; the browser is dropped either way."""
        browser, self.browser = self.browser, None
        alive = browser is not None and browser.is_alive()
        if browser is not None:
            browser.quit()
        summary = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if alive:  # e.g. a page that never finished loading
            return BrowserEnvError(
                f"the browser could not perform {during} ({summary}); call reset() to start afresh"
            )
        return BrowserCrashedError(
            f"headless Chromium stopped responding during {during} ({summary}); "
            "call reset() to start a fresh browser"
        )

    # ----------------------------------------------------------------- page I/O
    def _wait_for_new_page(self) -> None:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not self.browser.driver.execute_script(_NEW_PAGE_READY_JS):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new page within {PAGE_TIMEOUT_S} s")
            time.sleep(0.002)

    def _click(self, target: str) -> None:
        driver = self.browser.driver
        element: WebElement = driver.execute_script(_FIND_AND_MARK_JS, target)
        try:
            element.click()  # a real mouse click at the element's centre
        except (ElementClickInterceptedException, ElementNotInteractableException):
            driver.execute_script("arguments[0].click();", element)  # covered or off-screen
        self._wait_for_new_page()

    def _search(self, query: str) -> None:
        driver = self.browser.driver
        driver.execute_script(_MARK_JS)
        if self._available["has_search_bar"] and query.isprintable():
            box = driver.find_element("id", "search_input")
            if len(query) <= MAX_TYPED_QUERY_LENGTH and all(ord(c) < 0x10000 for c in query):
                box.clear()
                box.send_keys(query)
            else:
                driver.execute_script(_SET_VALUE_JS, box, query)
            driver.find_element("css selector", ".search-form button").click()
        else:
            # What the search form submits, for a page without the box (upstream's text env searches
            # from any page) or a query the box would alter (an input drops control characters).
            session_url = driver.current_url.split("?")[0].rstrip("/")
            query_string = urlencode({"q": query}, encoding="utf-8", errors="surrogatepass")
            driver.get(f"{session_url}/search?{query_string}")
        self._wait_for_new_page()

    def _read_page(self) -> str:
        page = self.browser.driver.execute_script(_READ_PAGE_JS)
        page_state = json.loads(page["state"]) if page["state"] else {}
        self._page_kind = page_state.get("kind", "search")
        if page["instruction"] is not None:  # the done page does not show it; the task stays
            self._task = page["instruction"]
        self._reward_text = page["reward"]
        # First occurrence wins, like upstream's dict of clickables.
        self._available = {
            "has_search_bar": bool(page["hasSearchBar"]),
            "clickables": list(dict.fromkeys(page["clickables"])),
        }
        return self._format(page["nodes"], page_state)

    def _format(self, dom_nodes: list[list[Any]], page_state: dict[str, Any]) -> str:
        """The page's text nodes -> the observation string, like the text env's."""
        nodes = [node for raw, role, pre in dom_nodes if (node := _bs4_node(raw, role, pre))]
        if self.observation_mode == "text":
            observation = SEP.join(text.strip() for text, _ in nodes)
        else:
            observation = _rich_observation(nodes, page_state)
        observation = to_text_charset(observation)
        self._observation = observation[: self.max_observation_length]
        return self._observation

    def _browser_info(self, *, valid: bool, score: float, done: bool) -> dict[str, Any]:
        commands = [SEARCH_TEMPLATE] if self._available["has_search_bar"] else []
        commands += [f"click[{c}]" for c in self._available["clickables"] if c != "search"]
        return {
            "task": self._task,
            "task_score": score,
            "won": bool(done and score == 1.0),
            "available_actions": {
                "has_search_bar": self._available["has_search_bar"],
                "clickables": list(self._available["clickables"]),
            },
            "admissible_commands": commands,
            "is_action_valid": valid,
            "goal_index": self.goal_index,
            "page": self._page_kind,
        }

    def _is_valid(self, action: Any) -> bool:
        """The core's validity rule, checked against the clickables the page shows."""
        if not isinstance(action, str) or len(action) > MAX_ACTION_LENGTH:
            return False
        verb, argument = parse_action(action)
        if verb == "search":
            return bool(argument)
        if verb == "click" and argument is not None:
            target = argument.lower()
            return target != "search" and target in self._available["clickables"]
        return False

    # ----------------------------------------------------------------- Gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Open a new site session on a goal (sampled like the text env's) at the search page.

        Args:
            seed: Seeds the env's generator (used to sample a goal of the split).
            options: ``{"goal_index": i}`` picks goal ``i`` of the whole goal list.

        Returns:
            The observation read from the browser and the info dict.

        Raises:
            RuntimeError: Chromium or chromedriver is not installed.
            BrowserCrashedError: The browser did not start, or died at once.
        """
        gym.Env.reset(self, seed=seed)  # seeds np_random exactly as the text env does
        self.goal_index = self._goal_index_from(options)
        self._ensure_running()
        try:
            self.browser.driver.get(f"{self.server.url}/new/{self.goal_index}")
            observation = self._read_page()
        except (WebDriverException, Urllib3HTTPError, OSError) as error:
            raise self._failed("reset()", error) from error
        return observation, self._browser_info(valid=True, score=0.0, done=False)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Perform ``search[...]`` / ``click[...]`` in the browser and read the new page.

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``terminated`` after buying.

        Raises:
            BrowserCrashedError: Chromium or chromedriver died (or hung); call ``reset()``.
        """
        if self.browser is None or self.goal_index is None:
            raise RuntimeError("call reset() before step()")
        valid = self._is_valid(action)
        try:
            if valid:
                verb, argument = parse_action(action)
                if verb == "search":
                    self._search(argument)
                else:
                    self._click(argument.lower())
            observation = self._read_page()
        except (WebDriverException, Urllib3HTTPError, OSError, TimeoutError) as error:
            raise self._failed(f"step({_preview(action)})", error) from error
        done = valid and self._page_kind == "done"
        reward = float(self._reward_text) if done else 0.0
        info = self._browser_info(valid=valid, score=reward, done=done)
        return observation, reward, done, False, info

    def render(self) -> Any:
        """``"ansi"``: the observation; ``"rgb_array"``: a screenshot (H x W x 3 uint8)."""
        if self.render_mode != "rgb_array":
            return super().render()
        if self.browser is None:
            return None
        import io  # noqa: PLC0415 - only for screenshots

        import numpy as np  # noqa: PLC0415
        from PIL import Image  # noqa: PLC0415

        png = self.browser.driver.get_screenshot_as_png()
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def get_available_actions(self) -> dict[str, Any]:
        """Upstream's ``get_available_actions()``, read from the page the browser shows."""
        if self.goal_index is None:
            raise RuntimeError("call reset() before get_available_actions()")
        return {
            "has_search_bar": self._available["has_search_bar"],
            "clickables": list(self._available["clickables"]),
        }

    def close(self) -> None:
        """Quit Chromium and stop the site (safe to call twice)."""
        if self.browser is not None:
            self.browser.quit()
            self.browser = None
        if self.server is not None:
            self.server.close()
            self.server = None
        super().close()


def _bs4_node(raw: str, role: str, preformatted: bool) -> tuple[str, str] | None:
    """A DOM text node as BeautifulSoup reports it (``None``: a node upstream skips).

    A whitespace-only node becomes a newline, which upstream's conversion skips, when it holds a
    line break, and one space otherwise.
    """
    if not preformatted and raw and not raw.strip(_BS4_WHITESPACE):
        return None if "\n" in raw else (" ", role)
    return (raw, role) if raw else None


def _rich_observation(nodes: list[tuple[str, str]], page_state: dict[str, Any]) -> str:
    """Upstream's ``convert_html_to_text(simple=False)``: one line per node, clickables marked."""
    # Upstream marks an option "clicked" when '"value"' occurs in the item page's URL, which holds
    # the keywords, the page number and the selected options as JSON.
    keywords = "+".join(page_state.get("keywords", ()))
    url_tail = f"{keywords}/{page_state.get('page', 1)}/{json.dumps(page_state.get('options', {}))}"
    visited = set(page_state.get("visited_asins", ()))
    clicked: list[str] = []
    lines = []
    for text, role in nodes:
        if role == BUTTON:
            lines.append(f"[button] {text} [button_]")
        elif role == LABEL and f'"{text}"' in url_tail:
            clicked.append(f"You have clicked {text}.\n")
            lines.append(f"  [clicked button] {text} [clicked button_]")
        elif role == LABEL:
            lines.append(f"  [button] {text} [button_]")
        elif role == LINK:
            mark = "clicked button" if text in visited else "button"
            lines.append(f"\n[{mark}] {text} [{mark}_]")
        else:
            lines.append(text)
    return "".join(reversed(clicked)) + "".join(line + "\n" for line in lines)


def _preview(action: Any, limit: int = 60) -> str:
    text = repr(action)
    return text if len(text) <= limit else f"{text[:limit]}...' ({len(action)} chars)"
