"""Regenerate the embedded WebShop catalogue shipped in ``hiper_gym/webshop/data/``.

The output is byte-for-byte reproducible (fixed seed, gzip without timestamps)::

    python scripts/generate_webshop_catalogue.py            # rewrite the shipped files
    python scripts/generate_webshop_catalogue.py --out DIR --num-products 10000 --seed 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hiper_gym.webshop.catalogue import EMBEDDED_DATA_DIR
from hiper_gym.webshop.generator import EMBEDDED_NUM_PRODUCTS, EMBEDDED_SEED, write_catalogue


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EMBEDDED_DATA_DIR, help="output folder")
    parser.add_argument("--num-products", type=int, default=EMBEDDED_NUM_PRODUCTS)
    parser.add_argument("--seed", type=int, default=EMBEDDED_SEED)
    args = parser.parse_args(argv)
    for path in write_catalogue(args.out, args.num_products, args.seed):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
