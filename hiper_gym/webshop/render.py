r"""Page state -> upstream's ``text`` / ``text_rich`` observation, without building HTML.

Upstream renders a Jinja template, parses it with BeautifulSoup and joins the visible text nodes
(``' [SEP] '`` for ``text``; one line per node with ``[button]`` markers for ``text_rich``). This
module lists, for each page state, the text nodes that the upstream templates produce, in document
order, with the role the ``text_rich`` conversion needs (plain text, button, option label, product
link), and applies the same whitespace rules as bs4: a node made only of ASCII whitespace becomes
``"\n"`` (dropped) if it contains a newline and ``" "`` otherwise (an empty ``text`` segment).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hiper_gym.webshop.shop import (
    BACK_TO_SEARCH,
    END_BUTTON,
    NEXT_PAGE,
    PREV_PAGE,
    SEARCH_BUTTON,
    SUB_PAGES,
    DonePage,
    ItemPage,
    ItemSubPage,
    PageState,
    ResultsPage,
    SearchPage,
)

OBSERVATION_MODES = ("text", "text_rich")
SEP = " [SEP] "
_ASCII_SPACES = " \n\t\x0c\r"  # what bs4 treats as whitespace

# node roles
TEXT, BUTTON, LABEL, LINK = "text", "button", "label", "link"
Node = tuple[str, str]


def _add(nodes: list[Node], raw: Any, role: str = TEXT, *, preformatted: bool = False) -> None:
    text = raw if isinstance(raw, str) else str(raw)
    if not text:
        return
    if not preformatted and not text.strip(_ASCII_SPACES):  # strip stops at the first letter
        if "\n" in text:
            return  # bs4 turns it into "\n", which both conversions skip
        text = " "
    nodes.append((text, role))


def _instruction(nodes: list[Node], state: PageState) -> None:
    _add(nodes, "Instruction:")
    _add(nodes, state.instruction_text)


def _search_nodes(state: SearchPage, nodes: list[Node]) -> None:
    _add(nodes, "WebShop")
    _add(nodes, "Instruction: ")
    _add(nodes, state.instruction_text)
    _add(nodes, SEARCH_BUTTON, BUTTON)


def _results_nodes(state: ResultsPage, nodes: list[Node]) -> None:
    _instruction(nodes, state)
    _add(nodes, BACK_TO_SEARCH, BUTTON)
    _add(nodes, f"Page {state.page} (Total results: {state.total})")
    if state.page > 1:
        _add(nodes, PREV_PAGE, BUTTON)
    _add(nodes, NEXT_PAGE, BUTTON)
    for product in state.products:
        _add(nodes, product["asin"], LINK)
        _add(nodes, product["Title"])
        _add(nodes, product["Price"])


def _item_nodes(state: ItemPage, nodes: list[Node]) -> None:
    _instruction(nodes, state)
    _add(nodes, BACK_TO_SEARCH, BUTTON)
    _add(nodes, PREV_PAGE, BUTTON)
    product = state.product
    for name, values in product["options"].items():
        _add(nodes, name)
        for value in values:
            _add(nodes, value, LABEL)
    _add(nodes, product["Title"])
    _add(nodes, f"Price: {product['Price']}")
    _add(nodes, f"Rating: {product['Rating']}")
    for sub_page in SUB_PAGES[:3] + (SUB_PAGES[3:] if state.show_attrs else ()):
        _add(nodes, sub_page, BUTTON)
    _add(nodes, END_BUTTON, BUTTON)


def _sub_page_nodes(state: ItemSubPage, nodes: list[Node]) -> None:
    _instruction(nodes, state)
    _add(nodes, BACK_TO_SEARCH, BUTTON)
    _add(nodes, PREV_PAGE, BUTTON)
    product = state.product
    if state.sub_page == "Description":
        _add(nodes, product["Description"])
    elif state.sub_page == "Features":
        for bullet in product["BulletPoints"]:
            _add(nodes, f" {bullet}")
    elif state.sub_page == "Reviews":
        for review in product["Reviews"]:
            _add(nodes, f'"{review.get("title", "")}"')
            _add(nodes, review.get("score", ""))
            _add(nodes, review.get("body", ""))
    else:
        for attribute in product["Attributes"]:
            _add(nodes, f" {attribute}")
        _add(nodes, product["category"])
        _add(nodes, product["query"])
        _add(nodes, product["product_category"])


def options_json(options: Mapping[str, str]) -> str:
    """Flask's ``tojson`` of the options (sorted keys, ASCII, HTML-safe), as the done page shows."""
    text = json.dumps(dict(options), sort_keys=True)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )


def _done_nodes(state: DonePage, nodes: list[Node]) -> None:
    # Upstream's text env renders the done page with only asin/options/reward set: the other fields
    # are ``None`` (shown as "None") and ``goal.*`` lookups on ``None`` are empty.
    _add(nodes, "Thank you for shopping with us!")
    _add(nodes, "Your code: ")
    _add(nodes, "None", preformatted=True)
    _add(nodes, " (Paste it in your MTurk interface.)")
    _add(nodes, "Purchased")
    _add(nodes, "asin")
    _add(nodes, state.asin, preformatted=True)
    _add(nodes, "options")
    _add(nodes, options_json(state.options), preformatted=True)
    for label in ("attrs", "category", "query", "product category"):
        _add(nodes, label)
        _add(nodes, "None", preformatted=True)
    _add(nodes, "Target")
    for label in ("asin", "options", "attrs", "price upper", "instuction text"):
        _add(nodes, label)
    for label in ("category", "product category", "query"):
        _add(nodes, label)
    _add(nodes, "Goal ")
    _add(nodes, "None", preformatted=True)
    _add(nodes, "Reward")
    _add(nodes, "Your score (min 0.0, max 1.0)")
    _add(nodes, repr(float(state.reward)), preformatted=True)
    _add(nodes, "Reward Details ")
    _add(nodes, "None", preformatted=True)


_NODE_BUILDERS = {
    "search": _search_nodes,
    "results": _results_nodes,
    "item": _item_nodes,
    "item_sub": _sub_page_nodes,
    "done": _done_nodes,
}


def text_nodes(state: PageState) -> list[Node]:
    """The visible text nodes of the page, in document order, as ``(text, role)``."""
    nodes: list[Node] = []
    _NODE_BUILDERS[state.kind](state, nodes)
    return nodes


def _rich_line(text: str, role: str, state: PageState, clicked_prefix: list[str]) -> str:
    if role == BUTTON:
        return f"[button] {text} [button_]"
    if role == LABEL:
        # upstream: the label is "clicked" when '"value"' occurs in the page URL
        url_tail = f"{'+'.join(state.keywords)}/{state.page}/{json.dumps(dict(state.options))}"
        if f'"{text}"' in url_tail:
            clicked_prefix.append(f"You have clicked {text}.\n")
            return f"  [clicked button] {text} [clicked button_]"
        return f"  [button] {text} [button_]"
    if role == LINK:
        if text in state.visited_asins:
            return f"\n[clicked button] {text} [clicked button_]"
        return f"\n[button] {text} [button_]"
    return text


def render_text(state: PageState, mode: str = "text") -> str:
    """Upstream's observation string of a page state.

    Args:
        state: A page state from :class:`~hiper_gym.webshop.shop.ShopSession`.
        mode: ``"text"`` (``' [SEP] '``-joined) or ``"text_rich"`` (one line per node, buttons
            marked).

    Returns:
        The observation, byte for byte what upstream's text env returns for the same page.

    Example:
        >>> from hiper_gym.webshop.shop import SearchPage
        >>> render_text(SearchPage("i want boots"))
        'WebShop [SEP] Instruction: [SEP] i want boots [SEP] Search'
    """
    nodes = text_nodes(state)
    if mode == "text":
        return SEP.join(text.strip() for text, _ in nodes)
    if mode != "text_rich":
        raise ValueError(f"unknown observation mode {mode!r}; choose one of {OBSERVATION_MODES}")
    clicked_prefix: list[str] = []
    body = "".join(_rich_line(t, role, state, clicked_prefix) + "\n" for t, role in nodes)
    return "".join(reversed(clicked_prefix)) + body
