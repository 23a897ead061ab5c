"""Regenerate (or check) the ALFWorld games shipped in ``hiper_gym/alfworld/games/``.

Usage:
    python scripts/generate_alfworld_games.py            # rewrite the shipped games
    python scripts/generate_alfworld_games.py --check    # exit 1 unless a fresh run matches them
    python scripts/generate_alfworld_games.py --out DIR --seed 7 --train 20 --valid-seen 5

The generator itself is :mod:`hiper_gym.alfworld.generator`.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from hiper_gym.alfworld.data import EMBEDDED_GAMES_DIR, count_by_task_type
from hiper_gym.alfworld.generator import DEFAULT_GAMES_PER_TASK_TYPE, DEFAULT_SEED, generate_games


def _same_tree(left: Path, right: Path) -> bool:
    left_files = sorted(p.relative_to(left) for p in left.rglob("*") if p.is_file())
    right_files = sorted(p.relative_to(right) for p in right.rglob("*") if p.is_file())
    if left_files != right_files:
        return False
    return all(filecmp.cmp(left / f, right / f, shallow=False) for f in left_files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=EMBEDDED_GAMES_DIR)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--train", type=int, default=DEFAULT_GAMES_PER_TASK_TYPE["train"])
    parser.add_argument("--valid-seen", type=int, default=DEFAULT_GAMES_PER_TASK_TYPE["valid_seen"])
    parser.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    args = parser.parse_args(argv)
    counts = {"train": args.train, "valid_seen": args.valid_seen}
    with tempfile.TemporaryDirectory() as scratch:
        written = generate_games(scratch, counts, seed=args.seed)
        if args.check:
            same = _same_tree(Path(scratch), args.out)
            print(f"{args.out}: {'matches' if same else 'DIFFERS FROM'} a fresh generation")
            return 0 if same else 1
        shutil.rmtree(args.out, ignore_errors=True)
        shutil.copytree(scratch, args.out)
    print(f"wrote {len(written)} games to {args.out}")
    for split in counts:
        games = sorted(args.out.glob(f"{split}/*/*/game.tw-pddl"))
        print(f"  {split}: {count_by_task_type(games)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
