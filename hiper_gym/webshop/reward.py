"""Upstream WebShop's reward (``web_agent_site/engine/goal.py``), re-implemented, same names.

``get_reward(purchased, goal, price, options)`` is

    r_type * (num_attr_matches + num_option_matches + (price <= price_upper))
           / (len(goal attributes) + len(goal options) + 1)

with upstream's quirks kept on purpose, so that scores equal upstream's:

* fuzzy matches use thefuzz's ``token_set_ratio(a, b) > 85`` (both sides stringified, Latin-1
  characters dropped, punctuation to spaces, lower-cased, score rounded to an int), computed with
  rapidfuzz;
* :func:`normalize_color` returns the first colour of ``COLOR_SET`` contained in the value, so it
  shortens a purchased value (``"green2"`` -> ``"green"``, ``"dash"`` -> ``"ash"``) while a
  synthetic goal option, passed as a ``(name, value)`` tuple, only changes when an element *equals*
  a colour. Buying the goal's own option can therefore miss: on the real 100-product sample 21 of
  the 501 synthetic goals score below 1.0 for an exact oracle purchase;
* the title score compares noun lists (see :mod:`hiper_gym.webshop.nouns`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from hiper_gym.webshop.nouns import title_nouns

#: Upstream's ``normalize.COLOR_SET``; order matters (first substring match wins).
COLOR_SET = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure",
    "banana", "beige", "black", "blue", "blush", "bordeaux", "bronze",
    "brown", "burgundy", "camel", "camo", "caramel", "champagne",
    "charcoal", "cheetah", "chestnut", "chocolate", "christmas", "coffee",
    "cognac", "copper", "coral", "cranberry", "cream", "crystal", "dark",
    "denim", "eggplant", "elephant", "espresso", "fuchsia", "gold", "granite",
    "grape", "graphite", "grass", "gray", "green", "grey", "heather", "indigo",
    "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light", "lilac",
    "lime", "magenta", "maroon", "mauve", "merlot", "midnight", "mint", "mocha",
    "multicolor", "mushroom", "mustard", "natural", "navy", "nude", "olive",
    "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow", "red",
    "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver", "skull",
    "slate", "steel", "stone", "stonewash", "sunflower", "tan", "taupe", "teal",
    "tiger", "turquoise", "violet", "walnut", "wheat", "white", "wine", "yellow",
)  # fmt: skip
FUZZY_THRESHOLD = 85
#: thefuzz's ``force_ascii`` removes exactly the code points 128-255.
_LATIN1_TABLE = {code: None for code in range(128, 256)}


def normalize_color(value: Any) -> Any:
    """Upstream's ``normalize_color``: the first colour contained in ``value``, else ``value``.

    For a string this is a substring test; for a ``(name, value)`` tuple (how synthetic goal options
    reach it) it is element equality, so tuples are almost never shortened.

    Example:
        >>> normalize_color("antique graywash"), normalize_color("dash"), normalize_color("xl")
        ('ash', 'ash', 'xl')
        >>> normalize_color(("color", "antique graywash"))
        ('color', 'antique graywash')
    """
    for color in COLOR_SET:
        if color in value:
            return color
    return value


@functools.lru_cache(maxsize=131072)
def _processed(value: str) -> str:
    return default_process(value.translate(_LATIN1_TABLE))


def fuzzy_match(a: Any, b: Any) -> bool:
    """Whether thefuzz's ``token_set_ratio(a, b) > 85`` (non-strings stringified like thefuzz)."""
    first, second = _processed(str(a)), _processed(str(b))
    score = fuzz.token_set_ratio(first, second, processor=None)
    return int(round(score)) > FUZZY_THRESHOLD


def get_type_reward(purchased: Mapping[str, Any], goal: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the purchase is the right kind of product (query, category path, title nouns).

    Args:
        purchased: The bought product (``query``, ``product_category``, ``name``).
        goal: The goal (``query``, ``product_category``, ``name``).

    Returns:
        ``{"r_type", "query_match", "category_match", "title_score"}``.

    Example:
        >>> p = {"query": "boots", "product_category": "A › B › C", "name": "Hiking Boots"}
        >>> get_type_reward(p, p)["r_type"]
        1.0
    """
    query_match = purchased["query"] == goal["query"]
    purchased_path = {part.strip() for part in purchased["product_category"].split("›")}
    goal_path = {part.strip() for part in goal["product_category"].split("›")}
    category_match = len(purchased_path & goal_path) >= 2
    purchased_nouns = title_nouns(purchased["name"])
    desired_nouns = title_nouns(goal["name"])
    if desired_nouns:
        title_score = len(set(purchased_nouns) & set(desired_nouns)) / len(desired_nouns)
    else:
        title_score = 0.2
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {
        "r_type": r_type,
        "query_match": query_match,
        "category_match": category_match,
        "title_score": title_score,
    }


def get_attribute_reward(
    purchased: Mapping[str, Any], goal: Mapping[str, Any]
) -> tuple[float, int]:
    """Goal attributes found among the product's attributes (fuzzy) or in its text (substring).

    Returns:
        ``(r_attr, num_attr_matches)``.

    Example:
        >>> p = {"Attributes": ["tea tree"], "Title": "Oil", "BulletPoints": [], "Description": ""}
        >>> get_attribute_reward(p, {"attributes": ["tea tree", "vegan"]})
        (0.5, 1)
    """
    goal_attributes = goal["attributes"]
    product_text = (
        purchased["Title"].lower(),
        " ".join(purchased["BulletPoints"]).lower(),
        purchased["Description"].lower(),
    )
    matches = 0
    for wanted in goal_attributes:
        if any(fuzzy_match(have, wanted) for have in purchased["Attributes"]):
            matches += 1
        elif any(wanted in text for text in product_text):
            matches += 1
    return matches / len(goal_attributes), matches


def _goal_option_items(goal_options: Any) -> list[Any]:
    if isinstance(goal_options, Mapping):
        return list(goal_options.items())  # upstream passes ``dict.items()`` for synthetic goals
    return list(goal_options)


def get_option_reward(
    purchased_options: Iterable[Any], goal_options: Any
) -> tuple[float | None, int]:
    """Goal options matched (fuzzily) by a purchased option value.

    Args:
        purchased_options: The selected option values (``list(options.values())`` upstream).
        goal_options: A list of values (human goals), or a ``{name: value}`` dict, matched as its
            ``(name, value)`` pairs like upstream's ``get_reward`` does for synthetic goals.

    Returns:
        ``(r_option, num_option_matches)``; ``r_option`` is ``None`` without goal options.

    Example:
        >>> get_option_reward(["antique graywash"], ["antique graywash"])
        (1.0, 1)
        >>> get_option_reward(["antique graywash"], {"color": "antique graywash"})
        (0.0, 0)
    """
    purchased = [normalize_color(value) for value in purchased_options]
    wanted = [normalize_color(option) for option in _goal_option_items(goal_options)]
    matches = sum(1 for goal in wanted if any(fuzzy_match(have, goal) for have in purchased))
    return (matches / len(wanted) if wanted else None), matches


def get_reward(
    purchased: Mapping[str, Any],
    goal: Mapping[str, Any],
    price: float,
    options: Mapping[str, str],
    *,
    verbose: bool = False,
) -> float | tuple[float, dict[str, Any]]:
    """Upstream's score of a purchase, in [0, 1].

    Args:
        purchased: The bought product record.
        goal: The goal dict (``attributes``, ``goal_options``, ``price_upper``, ``query``, ...).
        price: The product's price (``product_prices[asin]``).
        options: The selected options ``{name: value}``.
        verbose: Also return upstream's component dict.

    Returns:
        The score, or ``(score, info)`` when ``verbose``.

    Example:
        >>> p = {"query": "q", "product_category": "a › b", "name": "Tea Tree Oil",
        ...      "Title": "Tea Tree Oil", "Attributes": ["vegan"], "BulletPoints": [],
        ...      "Description": ""}
        >>> goal = dict(p, attributes=["vegan"], goal_options={}, price_upper=20.0)
        >>> get_reward(p, goal, price=10.0, options={})
        1.0
    """
    type_info = get_type_reward(purchased, goal)
    price_upper = goal["price_upper"]
    r_price = (price <= price_upper) if price_upper > 0 else None
    r_attr, num_attr_matches = get_attribute_reward(purchased, goal)
    r_option, num_option_matches = get_option_reward(list(options.values()), goal["goal_options"])
    denominator = len(goal["attributes"]) + len(goal["goal_options"]) + 1
    total = (num_attr_matches + num_option_matches + bool(r_price)) / denominator
    total *= type_info["r_type"]
    if not verbose:
        return total
    info: dict[str, Any] = {
        "r_type": type_info["r_type"],
        "r_att": r_attr,
        "w_att": len(goal["attributes"]) / denominator,
        "query_match": type_info["query_match"],
        "category_match": type_info["category_match"],
        "title_score": type_info["title_score"],
    }
    if r_option is not None:
        info["r_option"] = r_option
        info["w_option"] = len(goal["goal_options"]) / denominator
    if r_price is not None:
        info["r_price"] = r_price
        info["w_price"] = 1 / denominator
    return total, info
