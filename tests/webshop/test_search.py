"""bm25s search with upstream's parameters: matching only, top 50, stable ties, disk cache."""

from __future__ import annotations

import pytest

from hiper_gym.webshop import search as search_module
from hiper_gym.webshop.catalogue import load_catalogue
from hiper_gym.webshop.search import SearchEngine
from hiper_gym.webshop.shop import WebShop


@pytest.fixture(scope="module")
def embedded_engine():
    catalogue = load_catalogue()
    return catalogue, SearchEngine(catalogue)


def test_title_query_finds_the_product_first(embedded_engine):
    catalogue, engine = embedded_engine
    for product in catalogue.products[:50]:
        hits = engine.search(product["Title"].lower())
        assert product["asin"] in hits[:10]
        assert len(hits) <= 50


def test_only_matching_documents_are_returned(embedded_engine):
    _, engine = embedded_engine
    assert engine.search("zzzqqqxx") == []
    assert engine.search("the of and") == []  # stop words only
    assert engine.search("") == []


def test_ties_follow_catalogue_order_and_short_tokens_count(raw_product, tiny_catalogue):
    records = [raw_product(f"B00000000{i}", "same boots", bullets=[""]) for i in range(8)]
    records.append(raw_product("B000000009", "size 8 x 10 ft", bullets=[""]))
    engine = SearchEngine(tiny_catalogue(records))
    assert engine.search("same boots") == [f"B00000000{i}" for i in range(8)]
    assert engine.search("x 8") == ["B000000009"]  # 1-character tokens are kept


def test_large_index_is_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(search_module, "CACHE_MIN_PRODUCTS", 10)
    catalogue = load_catalogue()
    built = SearchEngine(catalogue, cache_dir=tmp_path)
    assert not built.loaded_from_cache and any(tmp_path.iterdir())
    loaded = SearchEngine(catalogue, cache_dir=tmp_path)
    assert loaded.loaded_from_cache
    for query in ("shampoo", "black hoodie small", "wireless earbuds noise cancelling"):
        assert loaded.search(query) == built.search(query)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_unreadable_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(search_module, "CACHE_MIN_PRODUCTS", 10)
    catalogue = load_catalogue()
    built = SearchEngine(catalogue, cache_dir=tmp_path)
    (cache,) = list(tmp_path.iterdir())
    (cache / search_module.VOCAB_FILE).write_text("{truncated")
    rebuilt = SearchEngine(catalogue, cache_dir=tmp_path)
    assert not rebuilt.loaded_from_cache
    assert rebuilt.search("olive oil") == built.search("olive oil")
    repaired = SearchEngine(catalogue, cache_dir=tmp_path)
    assert repaired.loaded_from_cache and repaired.search("olive oil") == built.search("olive oil")


def test_backdoors_are_off_by_default():
    plain = WebShop()
    assert plain.search(["<q>", "olive", "oil"]) == plain.search(["q", "olive", "oil"])
    with_backdoors = WebShop(search_backdoors=True)
    products = with_backdoors.search(["<q>", "olive", "oil"])
    assert products and all(p["query"] == "olive oil" for p in products)
    assert len(with_backdoors.search(["<r>"])) == 50


def test_result_cache_changes_no_result():
    cached, uncached = WebShop(), WebShop(search_cache_size=0)
    for query in (["black", "hoodie"], ["olive", "oil"], ["black", "hoodie"], ["zzz"]):
        assert [p["asin"] for p in cached.search(query)] == [
            p["asin"] for p in uncached.search(query)
        ]
    assert len(cached._search_cache) == 3 and not uncached._search_cache
