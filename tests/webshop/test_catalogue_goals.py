"""Loader rules, clear data errors, goals and splits."""

from __future__ import annotations

import gzip
import json

import pytest

from hiper_gym.webshop.catalogue import (
    WebShopDataError,
    build_catalogue,
    load_catalogue,
    parse_pricing,
    search_document,
)
from hiper_gym.webshop.goals import SPLITS, build_goals, price_constraint

UPSTREAM_FIELDS = (
    "Title", "Description", "BulletPoints", "Price", "pricing", "options",
    "option_to_image", "Attributes", "MainImage", "query", "Reviews", "Rating",
)  # fmt: skip


def test_real_sample_is_processed_like_upstream(sample_dir):
    catalogue = load_catalogue(sample_dir)
    assert len(catalogue) == 100
    documents = [json.loads(line) for line in (sample_dir / "documents_100.jsonl").open()]
    for document in documents:
        upstream = document["product"]
        ours = catalogue.by_asin[document["id"]]
        for key in UPSTREAM_FIELDS + ("name", "category", "product_category", "asin"):
            assert ours[key] == upstream[key], (document["id"], key)
        assert search_document(ours) == document["contents"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$877.80", ([877.8], "$877.8")),
        ("$19.99$27.99", ([19.99, 27.99], "$19.99 to $27.99")),
        ("$1,847.00", ([1847.0], "$1847.0")),
        ("", ([100.0], "$100.0")),
        (None, ([100.0], "$100.0")),
        ("$", ([100.0], "$100.0")),
    ],
)
def test_parse_pricing(raw, expected):
    assert parse_pricing(raw) == expected


def test_skip_rules_options_and_attributes(raw_product):
    records = [
        raw_product("nan", "skipped: nan asin"),
        raw_product("B0123456789X", "skipped: longer than 10"),
        raw_product("B000000001", "kept", options={"Color": ["Black/White", " Navy "]}),
        raw_product("B000000001", "skipped: duplicate"),
        raw_product("B000000002", "kept too", customization_options={"Size": None}),
    ]
    annotations = {"B000000001": {"attributes": []}}
    catalogue = build_catalogue(records, annotations)
    assert [p["Title"] for p in catalogue.products] == ["kept", "kept too"]
    first, second = catalogue.products
    assert first["options"] == {"color": ["black | white", "navy"]}
    assert first["Attributes"] == [] and second["Attributes"] == ["DUMMY_ATTR"]
    assert second["options"] == {} and "brand" not in first


def test_missing_and_malformed_files_name_the_file(tmp_path, raw_product):
    with pytest.raises(WebShopDataError, match="folder not found"):
        load_catalogue(tmp_path / "nope")
    with pytest.raises(WebShopDataError, match="items_shuffle"):
        load_catalogue(tmp_path)
    (tmp_path / "items_shuffle_1.json").write_text(json.dumps([raw_product("B000000001", "x")]))
    with pytest.raises(WebShopDataError, match="items_ins_v2"):
        load_catalogue(tmp_path)
    (tmp_path / "items_ins_v2_1.json").write_text("{not json")
    with pytest.raises(WebShopDataError, match="items_ins_v2_1.json is not valid JSON"):
        load_catalogue(tmp_path)
    (tmp_path / "items_ins_v2_1.json").write_text("[]")
    with pytest.raises(WebShopDataError, match="must hold a JSON dict"):
        load_catalogue(tmp_path)
    (tmp_path / "items_ins_v2_1.json").write_text("{}")
    (tmp_path / "items_shuffle_2.json").write_text("[]")
    with pytest.raises(WebShopDataError, match="several product files"):
        load_catalogue(tmp_path)
    assert len(load_catalogue(tmp_path, items_file="items_shuffle_1.json")) == 1
    (tmp_path / "items_shuffle_2.json").write_text('[{"name": "no asin"}]')
    with pytest.raises(WebShopDataError, match="record 0 is not a product dict"):
        load_catalogue(tmp_path, items_file="items_shuffle_2.json")


def test_gzip_files_and_env_var(tmp_path, monkeypatch, raw_product):
    with gzip.open(tmp_path / "items_shuffle_x.json.gz", "wt") as handle:
        json.dump([raw_product("B000000001", "gz")], handle)
    (tmp_path / "items_ins_v2_x.json").write_text("{}")
    monkeypatch.setenv("WEBSHOP_DATA", str(tmp_path))
    assert load_catalogue().products[0]["Title"] == "gz"


def test_embedded_catalogue_covers_five_categories():
    catalogue = load_catalogue()
    categories = {p["category"] for p in catalogue.products}
    assert categories == {"beauty", "fashion", "garden", "electronics", "grocery"}
    assert len(catalogue) == 600
    assert any(len(p["pricing"]) == 2 for p in catalogue.products)
    assert any(p["options"] for p in catalogue.products)


def test_price_constraint_is_above_the_price():
    import random

    rng = random.Random(0)
    for price in (0.5, 9.99, 55.0, 960.0):
        upper, text = price_constraint(price, rng)
        assert upper > price and text == f", and price lower than {upper:.2f} dollars"
    assert price_constraint(985.0, rng) == (1000000, "")


def test_synthetic_goals_on_real_sample(sample_dir):
    goal_set = build_goals(load_catalogue(sample_dir))
    goals = goal_set.goals
    assert len(goals) == 501
    goal = goals[0]
    assert set(goal) == {"asin", "category", "query", "name", "product_category",
                         "instruction_text", "attributes", "price_upper", "goal_options",
                         "weight"}  # fmt: skip
    assert isinstance(goal["goal_options"], dict)
    for goal in goals:
        for name, value in goal["goal_options"].items():
            assert f"{name}: {value}" in goal["instruction_text"]
        if goal["price_upper"] != 1000000:
            assert goal["instruction_text"].endswith(f"{goal['price_upper']:.2f} dollars")
    assert goal_set.split_indices("test") == range(0, 500)
    assert goal_set.split_indices("eval") == range(500, 501)
    assert len(goal_set.split_indices("train")) == 0


def test_goal_order_is_fixed_by_goal_seed():
    catalogue = load_catalogue()
    first = build_goals(catalogue, goal_seed=1).goals
    again = build_goals(catalogue, goal_seed=1).goals
    other = build_goals(catalogue, goal_seed=2).goals
    assert first == again
    assert [g["instruction_text"] for g in first] != [g["instruction_text"] for g in other]
    assert set(SPLITS) == {"test", "eval", "train", "all"}


def test_weights_favour_rare_attributes():
    goals = build_goals(load_catalogue()).goals
    counts = {}
    for goal in goals:
        for attribute in goal["attributes"]:
            counts[attribute] = counts.get(attribute, 0) + 1
    goal = goals[0]
    expected = sum(1 / counts[a] for a in goal["attributes"]) / len(goal["attributes"])
    assert goal["weight"] == pytest.approx(expected)


def test_human_goals_from_the_real_record(sample_dir, human_goal_data):
    data_dir, record = human_goal_data
    goal_set = build_goals(load_catalogue(data_dir), "human")
    kept = [r for r in record["instructions"] if r["instruction_attributes"]]
    assert len(goal_set.goals) == len(kept) > 0
    goal = goal_set.goals[0]
    assert isinstance(goal["goal_options"], list) and goal["weight"] == 1
    assert goal["asin"] == record["asin"]
    with pytest.raises(ValueError, match="no human goals"):
        build_goals(load_catalogue(sample_dir), "human")
    with pytest.raises(ValueError, match="unknown goal source"):
        build_goals(load_catalogue(sample_dir), "robot")
