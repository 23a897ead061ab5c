r"""Page state -> upstream's ``text`` / ``text_rich`` observation, without building HTML.

Upstream renders a Jinja template, parses it with BeautifulSoup and joins the visible text nodes
(``' [SEP] '`` for ``text``; one line per node with ``[button]`` markers for ``text_rich``). This
module
lists, for each page state, the text nodes that the upstream templates produce, in document order,
with
the role the ``text_rich`` conversion needs (plain text, button, option label, product link), and
applies the same whitespace rules as bs4: a node made only of ASCII whitespace becomes ``"\n"``
(dropped) if it contains a newline and ``" "`` otherwise (an empty ``text`` segment).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
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
_ASCII_SPACES = str.maketrans("", "", " \n\t\x0c\r")

# node roles
TEXT, BUTTON, LABEL, LINK = "text", "button", "label", "link"
Node = tuple[str, str]


def _node(raw: Any, role: str = TEXT, *, preformatted: bool = False) -> Iterator[Node]:
    text = raw if isinstance(raw, str) else str(raw)
    if not text:
        return
    if not preformatted and not text.translate(_ASCII_SPACES):
        if "\n" in text:
            return  # bs4 turns it into "\n", which both conversions skip
        text = " "
    yield text, role


def _instruction(state: PageState) -> Iterator[Node]:
    yield from _node("Instruction:")
    yield from _node(state.instruction_text)


def _search_nodes(state: SearchPage) -> Iterator[Node]:
    yield from _node("WebShop")
    yield from _node("Instruction: ")
    yield from _node(state.instruction_text)
    yield from _node(SEARCH_BUTTON, BUTTON)


def _results_nodes(state: ResultsPage) -> Iterator[Node]:
    yield from _instruction(state)
    yield from _node(BACK_TO_SEARCH, BUTTON)
    yield from _node(f"Page {state.page} (Total results: {state.total})")
    if state.page > 1:
        yield from _node(PREV_PAGE, BUTTON)
    yield from _node(NEXT_PAGE, BUTTON)
    for product in state.products:
        yield from _node(product["asin"], LINK)
        yield from _node(product["Title"])
        yield from _node(product["Price"])


def _item_nodes(state: ItemPage) -> Iterator[Node]:
    yield from _instruction(state)
    yield from _node(BACK_TO_SEARCH, BUTTON)
    yield from _node(PREV_PAGE, BUTTON)
    product = state.product
    for name, values in product["options"].items():
        yield from _node(name)
        for value in values:
            yield from _node(value, LABEL)
    yield from _node(product["Title"])
    yield from _node(f"Price: {product['Price']}")
    yield from _node(f"Rating: {product['Rating']}")
    for sub_page in SUB_PAGES[:3] + (SUB_PAGES[3:] if state.show_attrs else ()):
        yield from _node(sub_page, BUTTON)
    yield from _node(END_BUTTON, BUTTON)


def _sub_page_nodes(state: ItemSubPage) -> Iterator[Node]:
    yield from _instruction(state)
    yield from _node(BACK_TO_SEARCH, BUTTON)
    yield from _node(PREV_PAGE, BUTTON)
    product = state.product
    if state.sub_page == "Description":
        yield from _node(product["Description"])
    elif state.sub_page == "Features":
        for bullet in product["BulletPoints"]:
            yield from _node(f" {bullet}")
    elif state.sub_page == "Reviews":
        for review in product["Reviews"]:
            yield from _node(f'"{review.get("title", "")}"')
            yield from _node(review.get("score", ""))
            yield from _node(review.get("body", ""))
    else:
        for attribute in product["Attributes"]:
            yield from _node(f" {attribute}")
        yield from _node(product["category"])
        yield from _node(product["query"])
        yield from _node(product["product_category"])


def options_json(options: Mapping[str, str]) -> str:
    """Flask's ``tojson`` of the options (sorted keys, ASCII, HTML-safe), as the done page shows."""
    text = json.dumps(dict(options), sort_keys=True)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("'", "\\u0027")
    )


def _done_nodes(state: DonePage) -> Iterator[Node]:
    # Upstream's text env renders the done page with only asin/options/reward set: the other fields
    # are ``None`` (shown as "None") and ``goal.*`` lookups on ``None`` are empty.
    yield from _node("Thank you for shopping with us!")
    yield from _node("Your code: ")
    yield from _node("None", preformatted=True)
    yield from _node(" (Paste it in your MTurk interface.)")
    yield from _node("Purchased")
    yield from _node("asin")
    yield from _node(state.asin, preformatted=True)
    yield from _node("options")
    yield from _node(options_json(state.options), preformatted=True)
    for label in ("attrs", "category", "query", "product category"):
        yield from _node(label)
        yield from _node("None", preformatted=True)
    yield from _node("Target")
    for label in ("asin", "options", "attrs", "price upper", "instuction text"):
        yield from _node(label)
    for label in ("category", "product category", "query"):
        yield from _node(label)
    yield from _node("Goal ")
    yield from _node("None", preformatted=True)
    yield from _node("Reward")
    yield from _node("Your score (min 0.0, max 1.0)")
    yield from _node(repr(float(state.reward)), preformatted=True)
    yield from _node("Reward Details ")
    yield from _node("None", preformatted=True)


_NODE_BUILDERS = {
    "search": _search_nodes,
    "results": _results_nodes,
    "item": _item_nodes,
    "item_sub": _sub_page_nodes,
    "done": _done_nodes,
}


def text_nodes(state: PageState) -> list[Node]:
    """The visible text nodes of the page, in document order, as ``(text, role)``."""
    return list(_NODE_BUILDERS[state.kind](state))


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
