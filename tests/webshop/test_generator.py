"""The embedded catalogue is generated deterministically and shipped small."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from hiper_gym.webshop.catalogue import EMBEDDED_DATA_DIR, build_catalogue
from hiper_gym.webshop.generator import ATTRIBUTES_NAME, ITEMS_NAME, generate_catalogue

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "generate_webshop_catalogue.py"
RAW_KEYS = {
    "name", "full_description", "pricing", "images", "product_category", "average_rating",
    "small_description", "customization_options", "asin", "category", "query", "page",
}  # fmt: skip


def test_script_reproduces_shipped_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True,
                   capture_output=True)  # fmt: skip
    for name in (ITEMS_NAME, ATTRIBUTES_NAME):
        assert (tmp_path / name).read_bytes() == (EMBEDDED_DATA_DIR / name).read_bytes()
    shipped = sum((EMBEDDED_DATA_DIR / n).stat().st_size for n in (ITEMS_NAME, ATTRIBUTES_NAME))
    assert shipped < 300_000


def test_raw_schema_and_instructions():
    items = json.loads(gzip.decompress((EMBEDDED_DATA_DIR / ITEMS_NAME).read_bytes()))
    annotations = json.loads(gzip.decompress((EMBEDDED_DATA_DIR / ATTRIBUTES_NAME).read_bytes()))
    assert all(RAW_KEYS <= set(item) for item in items)
    assert set(annotations) == {item["asin"] for item in items}
    with_instruction = [a for a in annotations.values() if "instruction" in a]
    assert 0.6 < len(with_instruction) / len(annotations) < 0.9
    assert all(set(a["instruction_attributes"]) <= set(a["attributes"]) for a in with_instruction)
    assert {type(i["customization_options"]) for i in items} == {dict, str}
    assert any("$" in i["pricing"][1:] for i in items if i["pricing"])  # some price ranges


def test_generator_is_seeded_and_scales():
    first, first_ann = generate_catalogue(300, seed=7)
    again, again_ann = generate_catalogue(300, seed=7)
    assert first == again and first_ann == again_ann
    assert generate_catalogue(300, seed=8)[0] != first
    catalogue = build_catalogue(*generate_catalogue(2000, seed=3))
    assert len(catalogue) == 2000  # ASINs are unique, nothing skipped
