"""Observations byte for byte against the strings measured from upstream (spec §1.8)."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from hiper_gym.webshop.render import options_json, render_text
from hiper_gym.webshop.shop import (
    DonePage,
    ItemPage,
    ItemSubPage,
    ResultsPage,
    SearchPage,
    page_clickables,
)

BOOTS_INSTRUCTION = "i want waterproof boots in black, size 8, and price lower than 90.00 dollars"
SHIRT_INSTRUCTION = (
    "i want an xx-small sized slim fit button down shirt with long sleeves. pick something in "
    "white, and price lower than 50.00 dollars"
)
HOODIE_INSTRUCTION = (
    "Find me machine wash, wash cold women's fashion hoodies & sweatshirts for dry clean, tumble "
    "dry with color: navy blue, and size: small, and price lower than 70.00 dollars"
)


@pytest.fixture
def boots(raw_product, tiny_catalogue):
    record = raw_product(
        "B000TEST01",
        "Acme Waterproof Hiking Boots",
        pricing="$59.99$79.99",
        options={"Color": ["Black", "Brown"], "Size": ["8", "9 Wide"]},
        bullets=["Rubber sole", "Waterproof membrane"],
    )
    return tiny_catalogue([record]).products[0]


def actions(state):
    return {"has_search_bar": state.kind == "search", "clickables": list(page_clickables(state))}


def test_search_page(boots):
    state = SearchPage(BOOTS_INSTRUCTION)
    assert render_text(state) == (
        "WebShop [SEP] Instruction: [SEP] i want waterproof boots in black, size 8, and price "
        "lower than 90.00 dollars [SEP] Search"
    )
    assert actions(state) == {"has_search_bar": True, "clickables": ["search"]}


def test_results_pages(boots):
    first = ResultsPage(BOOTS_INSTRUCTION, ("boots",), 1, 1, (boots,))
    assert render_text(first) == (
        f"Instruction: [SEP] {BOOTS_INSTRUCTION} [SEP] Back to Search [SEP] Page 1 (Total results: "
        "1) [SEP] Next > [SEP] B000TEST01 [SEP] Acme Waterproof Hiking Boots [SEP] $59.99 to $79.99"
    )
    assert actions(first)["clickables"] == ["back to search", "next >", "b000test01"]
    second = ResultsPage(BOOTS_INSTRUCTION, ("boots",), 2, 11, (boots,))
    assert render_text(second) == (
        f"Instruction: [SEP] {BOOTS_INSTRUCTION} [SEP] Back to Search [SEP] Page 2 (Total results: "
        "11) [SEP] < Prev [SEP] Next > [SEP] B000TEST01 [SEP] Acme Waterproof Hiking Boots [SEP] "
        "$59.99 to $79.99"
    )
    assert actions(second)["clickables"] == ["back to search", "< prev", "next >", "b000test01"]


def test_item_and_features_pages(boots):
    item = ItemPage(BOOTS_INSTRUCTION, ("boots",), 1, boots, MappingProxyType({}))
    assert render_text(item) == (
        f"Instruction: [SEP] {BOOTS_INSTRUCTION} [SEP] Back to Search [SEP] < Prev [SEP] color "
        "[SEP] black [SEP] brown [SEP] size [SEP] 8 [SEP] 9 wide [SEP] Acme Waterproof Hiking "
        "Boots [SEP] Price: $59.99 to $79.99 [SEP] Rating: N.A. [SEP] Description [SEP] Features "
        "[SEP] Reviews [SEP] Buy Now"
    )
    assert actions(item)["clickables"] == [
        "back to search", "< prev", "description", "features", "reviews", "buy now",
        "black", "brown", "8", "9 wide",
    ]  # fmt: skip
    features = ItemSubPage(
        BOOTS_INSTRUCTION, ("boots",), 1, boots, MappingProxyType({}), "Features"
    )
    assert render_text(features) == (
        f"Instruction: [SEP] {BOOTS_INSTRUCTION} [SEP] Back to Search [SEP] < Prev [SEP] Rubber "
        "sole [SEP] Waterproof membrane"
    )
    assert actions(features)["clickables"] == ["back to search", "< prev"]


def test_mock_item_page_from_upstream_tests(raw_product, tiny_catalogue):
    title = (
        "PMUYBHF Womens Fashion Flat Shoes Comfortable Running Shoes Sneakers Tennis Athletic "
        "Shoe Casual Walking Shoes"
    )
    record = raw_product(
        "B09P87V3LZ",
        title,
        options={"color": ["Black", "Purple", "Red"], "size": ["6.5", "7.5", "8", "8.5", "9"]},
    )
    product = tiny_catalogue([record]).products[0]
    state = ItemPage(SHIRT_INSTRUCTION, ("shirt",), 1, product, MappingProxyType({}))
    assert render_text(state) == (
        f"Instruction: [SEP] {SHIRT_INSTRUCTION} [SEP] Back to Search [SEP] < Prev [SEP] color "
        "[SEP] black [SEP] purple [SEP] red [SEP] size [SEP] 6.5 [SEP] 7.5 [SEP] 8 [SEP] 8.5 "
        f"[SEP] 9 [SEP] {title} [SEP] Price: $100.0 [SEP] Rating: N.A. [SEP] Description [SEP] "
        "Features [SEP] Reviews [SEP] Buy Now"
    )


def test_text_rich_search_results_and_clicked_option(raw_product, tiny_catalogue):
    assert render_text(SearchPage(HOODIE_INSTRUCTION), "text_rich") == (
        f"WebShop\nInstruction: \n{HOODIE_INSTRUCTION}\n[button] Search [button_]\n"
    )
    hoodie = raw_product(
        "B01HQTWL6S",
        "Expression Tees Pug Life Funny Thug Life Unisex Adult Hoodie",
        pricing="$36.99$48.99",
        options={
            "Size": ["Small", "Medium", "Large", "X-Large", "XX-Large"],
            "Color": ["Navy Blue"],
        },
    )
    product = tiny_catalogue([hoodie]).products[0]
    results = ResultsPage(HOODIE_INSTRUCTION, ("expression",), 1, 12, (product,))
    assert render_text(results, "text_rich").startswith(
        f"Instruction:\n{HOODIE_INSTRUCTION}\n[button] Back to Search [button_]\nPage 1 (Total "
        "results: 12)\n[button] Next > [button_]\n\n[button] B01HQTWL6S [button_]\nExpression "
        "Tees Pug Life Funny Thug Life Unisex Adult Hoodie\n$36.99 to $48.99\n"
    )
    visited = ResultsPage(HOODIE_INSTRUCTION, ("x",), 1, 1, (product,), frozenset({"B01HQTWL6S"}))
    assert "\n[clicked button] B01HQTWL6S [clicked button_]\n" in render_text(visited, "text_rich")
    item = ItemPage(
        HOODIE_INSTRUCTION, ("x",), 1, product, MappingProxyType({"color": "navy blue"})
    )
    assert render_text(item, "text_rich").startswith(
        f"You have clicked navy blue.\nInstruction:\n{HOODIE_INSTRUCTION}\n[button] Back to Search "
        "[button_]\n[button] < Prev [button_]\nsize\n  [button] small [button_]\n  [button] "
        "medium [button_]\n  [button] large [button_]\n  [button] x-large [button_]\n  [button] "
        "xx-large [button_]\n"
    )
    assert "  [clicked button] navy blue [clicked button_]\n" in render_text(item, "text_rich")


def test_whitespace_rules_of_bs4(boots):
    # an empty bullet renders as " " (no newline) -> an empty [SEP] segment, like bs4
    product = dict(boots, BulletPoints=["", "ok"], Description="\n  \n")
    features = ItemSubPage("go", (), 1, product, MappingProxyType({}), "Features")
    assert (
        render_text(features)
        == "Instruction: [SEP] go [SEP] Back to Search [SEP] < Prev [SEP]  [SEP] ok"
    )
    description = ItemSubPage("go", (), 1, product, MappingProxyType({}), "Description")
    assert render_text(description) == "Instruction: [SEP] go [SEP] Back to Search [SEP] < Prev"


def test_done_page_as_upstream_text_env_renders_it(boots):
    state = DonePage("go", "B000TEST01", MappingProxyType({"size": "8", "color": "black"}), 0.75,
                     MappingProxyType({}), boots, {})  # fmt: skip
    assert render_text(state) == (
        "Thank you for shopping with us! [SEP] Your code: [SEP] None [SEP] (Paste it in your MTurk "
        'interface.) [SEP] Purchased [SEP] asin [SEP] B000TEST01 [SEP] options [SEP] {"color": '
        '"black", "size": "8"} [SEP] attrs [SEP] None [SEP] category [SEP] None [SEP] query [SEP] '
        "None [SEP] product category [SEP] None [SEP] Target [SEP] asin [SEP] options [SEP] attrs "
        "[SEP] price upper [SEP] instuction text [SEP] category [SEP] product category [SEP] query "
        "[SEP] Goal [SEP] None [SEP] Reward [SEP] Your score (min 0.0, max 1.0) [SEP] 0.75 [SEP] "
        "Reward Details [SEP] None"
    )
    assert page_clickables(state) == {}


def test_options_json_is_flask_tojson():
    assert options_json({"b": "it's <1> & more", "a": "ü"}) == (
        '{"a": "\\u00fc", "b": "it\\u0027s \\u003c1\\u003e \\u0026 more"}'
    )


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="observation mode"):
        render_text(SearchPage("x"), "html")
