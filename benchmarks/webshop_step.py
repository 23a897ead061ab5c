"""WebShop step speed: text env steps at 1k/10k/100k generated products and a random-policy loop.

Prints one table per part, all measured in this run:

1. per catalogue size (products generated in memory by ``hiper_gym.webshop.generator``): index build
   time, index load time from the disk cache, index and process memory, search latency, and text-env
   steps/s for a non-search step (item page <-> sub page clicks) and for a search step (every query
   distinct, result cache off);
2. the browser env's per-action time (filled in by the browser env's author, see ``BROWSER``);
3. the mixed random-policy loop on the real 100-product sample (``../shared/data/webshop``; the
   embedded catalogue when absent): reset, read ``admissible_commands``, take a random one
   (the search template is filled with the task text), at most 15 steps an episode, 500 episodes.
   For scale: upstream's own text env does about 95 steps/s on this loop.

Run:  python benchmarks/webshop_step.py [--sizes 1000 10000 100000] [--episodes 500]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

import hiper_gym  # noqa: F401  (registers HiPER-WebShop-v0)
from hiper_gym.webshop.catalogue import build_catalogue
from hiper_gym.webshop.generator import generate_catalogue
from hiper_gym.webshop.search import SearchEngine
from hiper_gym.webshop.shop import WebShop
from hiper_gym.webshop.text_env import SEARCH_TEMPLATE, WebShopTextEnv

SAMPLE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "webshop"
UPSTREAM_LOOP_STEPS_PER_SECOND = 95.0
#: Products that keep their synthetic instruction in the large catalogues (goals are not what is
#: measured, and 100k products with instructions would mean ~400k goal dicts in memory).
PRODUCTS_WITH_GOALS = 1000


def rss_mib() -> float:
    """Resident memory of this process in MiB (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_catalogue(num_products: int):
    items, annotations = generate_catalogue(num_products, seed=num_products)
    for position, item in enumerate(items):
        if position >= PRODUCTS_WITH_GOALS:
            annotation = annotations[item["asin"]]
            annotation.pop("instruction", None)
            annotation.pop("instruction_attributes", None)
    return build_catalogue(items, annotations), items


def time_per_call(function, calls: int) -> tuple[float, float]:
    """Seconds per call by wall clock and by this process's CPU time (the machine is shared)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls, (time.process_time() - cpu_start) / calls


def search_queries(items, count: int, rng: random.Random) -> list[str]:
    queries = []
    for item in rng.sample(items, min(count, len(items))):
        words = item["name"].lower().split()
        queries.append(" ".join(rng.sample(words, min(len(words), rng.randint(2, 5)))))
    return queries


def measure_size(num_products: int, cache_root: Path) -> dict[str, Any]:
    rng = random.Random(0)
    catalogue, items = make_catalogue(num_products)
    rss_before = rss_mib()
    start, cpu_start = time.perf_counter(), time.process_time()
    engine = SearchEngine(catalogue, cache_dir=cache_root)
    build_s, build_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    rss_after = rss_mib()
    start = time.perf_counter()
    cached = SearchEngine(catalogue, cache_dir=cache_root)
    load_s = time.perf_counter() - start if cached.loaded_from_cache else float("nan")
    queries = search_queries(items, 1000, rng)
    query_cycle = iter(queries)
    search_s = time_per_call(lambda: engine.search(next(query_cycle)), len(queries))

    shop = WebShop(catalogue=catalogue, cache_dir=cache_root, search_cache_size=0)
    env = WebShopTextEnv(shop=shop, split="all")
    env.reset(seed=0)
    query_cycle = iter(queries)
    search_step_s = time_per_call(lambda: env.step(f"search[{next(query_cycle)}]"), len(queries))

    env.step(f"search[{queries[0]}]")
    asin = env.session.available_actions()["clickables"][2]
    env.step(f"click[{asin}]")
    toggles = iter(["click[description]", "click[< prev]"] * 5000)
    click_s = time_per_call(lambda: env.step(next(toggles)), 5000)
    return {
        "products": num_products,
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "load_s": load_s,
        "index_mib": engine.index_nbytes() / 2**20,
        "rss_delta_mib": rss_after - rss_before,
        "search_ms": [1000 * t for t in search_s],
        "click_steps_s": [1 / t for t in click_s],
        "search_steps_s": [1 / t for t in search_step_s],
    }


def browser_action_seconds() -> float | None:
    """BROWSER: per-action time of ``HiPER-WebShopBrowser-v0`` (Selenium + headless Chromium).

    Measured by ``benchmarks/_webshop_browser_timing.py`` (driver start, reset, time per action
    kind) on the loop shape of :func:`random_policy_loop`, 20 episodes. ``None`` prints "n/a".
    """
    from _webshop_browser_timing import browser_action_seconds as measure  # next to this file

    data_dir = SAMPLE_DIR if (SAMPLE_DIR / "items_shuffle_100.json").exists() else None
    return measure(episodes=20, data_dir=data_dir)


def random_policy_loop(episodes: int, seed: int = 0) -> tuple[float, float, int, str]:
    """Steps/s by wall clock and by this process's CPU time, steps taken, data label."""
    if (SAMPLE_DIR / "items_shuffle_100.json").exists():
        data_dir, label = SAMPLE_DIR, "real 100-product sample"
    else:
        data_dir, label = None, "embedded catalogue (real sample absent)"
    env = gym.make("HiPER-WebShop-v0", data_dir=data_dir, split="all")
    rng = random.Random(seed)
    steps = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for episode in range(episodes):
        _, info = env.reset(seed=seed + episode)
        for _ in range(15):
            command = rng.choice(info["admissible_commands"] or [SEARCH_TEMPLATE])
            if command == SEARCH_TEMPLATE:
                command = f"search[{info['task']}]"
            _, _, terminated, truncated, info = env.step(command)
            steps += 1
            if terminated or truncated:
                break
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return steps / wall, steps / cpu, steps, label


def pair(wall: float, cpu: float, spec: str) -> str:
    return f"{wall:{spec}} | {cpu:{spec}}"


def main() -> None:
    parser = argparse.ArgumentParser(description="WebShop text env speed")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--episodes", type=int, default=500)
    args = parser.parse_args()

    print("== text env at scale (generated products; index cached under a temp dir)")
    print("   timings as wall | CPU (this process's CPU time; the machine is shared)")
    header = (
        f"{'products':>9} {'build s':>13} {'load s':>7} {'index MiB':>9} {'RSS+ MiB':>8} "
        f"{'search ms':>13} {'click steps/s':>15} {'search steps/s':>15}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as cache_root:
        for size in args.sizes:
            row = measure_size(size, Path(cache_root))
            print(
                f"{row['products']:>9,} {pair(row['build_s'], row['build_cpu_s'], '.2f'):>13} "
                f"{row['load_s']:>7.3f} {row['index_mib']:>9.1f} {row['rss_delta_mib']:>8.1f} "
                f"{pair(*row['search_ms'], '.3f'):>13} {pair(*row['click_steps_s'], ',.0f'):>15} "
                f"{pair(*row['search_steps_s'], ',.0f'):>15}"
            )
    print("   (load s: loading the cached index; n/a below 2,000 products, which are not cached)")

    print("\n== browser env (Selenium) per action")
    browser_s = browser_action_seconds()
    print("   n/a (not measured here)" if browser_s is None else f"   {browser_s * 1000:.1f} ms")

    print(f"\n== mixed random-policy loop ({args.episodes} episodes, <= 15 steps each)")
    steps_per_s, cpu_steps_per_s, steps, label = random_policy_loop(args.episodes)
    ratio = steps_per_s / UPSTREAM_LOOP_STEPS_PER_SECOND
    print(f"   data: {label}; {steps:,} steps (gym.make wrappers included)")
    print(
        f"   hiper-gym text env: {steps_per_s:,.0f} steps/s wall, {cpu_steps_per_s:,.0f} per CPU s"
    )
    print(f"   upstream text env (spec figure): ~{UPSTREAM_LOOP_STEPS_PER_SECOND:.0f} steps/s "
          f"-> {ratio:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
