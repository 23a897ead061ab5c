"""Deterministic generator of WebShop-like catalogues in upstream's raw schema.

The project ships no scraped data: its default catalogue is generated here from fixed vocabularies
and a seeded ``random.Random``. Products cover upstream's five categories (beauty, fashion, garden,
electronics, grocery) with brands, titles, descriptions, bullet points, options (raw
``customization_options`` form, mixed case, some ``/`` values), prices (single, ranges and missing)
and, in the ``items_ins_v2`` file, attributes and synthetic instructions.

``scripts/generate_webshop_catalogue.py`` writes the embedded files; the benchmark uses
:func:`generate_catalogue` in memory for 1k-100k products.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import string
from pathlib import Path
from typing import Any

EMBEDDED_SEED = 20240611
EMBEDDED_NUM_PRODUCTS = 600
ITEMS_NAME = "items_shuffle_embedded.json.gz"
ATTRIBUTES_NAME = "items_ins_v2_embedded.json.gz"
INSTRUCTION_RATE = 0.75

_COLORS = [
    "Black", "White", "Navy Blue", "Grey", "Red", "Pink", "Beige", "Olive Green", "Light Blue",
    "Burgundy", "Khaki", "Brown", "Black/White", "Purple", "Yellow", "Teal",
]  # fmt: skip
_APPAREL_SIZES = ["X-Small", "Small", "Medium", "Large", "X-Large", "XX-Large", "3X-Large"]
_SHOE_SIZES = ["6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "11", "12 Wide"]

# Each product type: noun phrase, scrape query, category path, attribute pool, option pools.
_TYPES: dict[str, list[dict[str, Any]]] = {
    "beauty": [
        dict(
            noun="Shampoo",
            query="shampoo & conditioner",
            path="Hair Care › Shampoo & Conditioner › Shampoos",
            attrs=[
                "sulfate free",
                "paraben free",
                "argan oil",
                "dry hair",
                "natural ingredients",
                "color treated",
            ],
            options={
                "size": ["8 Fl Oz", "12 Fl Oz", "16 Fl Oz", "32 Fl Oz"],
                "scent": ["Coconut", "Lavender", "Unscented", "Tea Tree"],
            },
        ),
        dict(
            noun="Face Moisturizer",
            query="face moisturizers",
            path="Skin Care › Face › Moisturizers",
            attrs=[
                "hyaluronic acid",
                "sensitive skin",
                "fragrance free",
                "anti aging",
                "oil free",
                "dermatologist tested",
            ],
            options={"size": ["1.7 Ounce", "3.4 Ounce"], "style": ["Day Cream", "Night Cream"]},
        ),
        dict(
            noun="Nail Polish",
            query="nail polish",
            path="Foot, Hand & Nail Care › Nail Art & Polish › Nail Polish",
            attrs=["long lasting", "quick dry", "non toxic", "gel", "high gloss"],
            options={"color": ["Red", "Nude", "Coral", "Burgundy", "Black", "Lilac"]},
        ),
        dict(
            noun="Hair Extensions",
            query="hair extensions",
            path="Hair Care › Hair Extensions, Wigs & Accessories › Extensions",
            attrs=["clip in", "natural looking", "heat resistant", "long hair", "synthetic hair"],
            options={
                "color": ["Black", "Dark Brown", "Blonde", "Ash Brown"],
                "size": ["16 Inch", "20 Inch", "24 Inch"],
            },
        ),
        dict(
            noun="Body Scrub",
            query="scrubs & body treatments",
            path="Skin Care › Body › Scrubs & Body Treatments",
            attrs=["tea tree", "essential oils", "natural ingredients", "dead skin", "vegan"],
            options={"scent": ["Tea Tree", "Coffee", "Rose", "Peppermint"]},
        ),
        dict(
            noun="Makeup Brush Set",
            query="makeup brushes & tools",
            path="Tools & Accessories › Makeup Brushes & Tools › Brush Sets",
            attrs=["synthetic bristles", "travel size", "cruelty free", "easy clean"],
            options={"color": ["Rose Gold", "Black", "Pink"]},
        ),
    ],
    "fashion": [
        dict(
            noun="Hoodie",
            query="women's fashion hoodies & sweatshirts",
            path="Clothing, Shoes & Jewelry › Women › Clothing › Active › Hoodies",
            attrs=[
                "machine wash",
                "long sleeve",
                "cotton blend",
                "relaxed fit",
                "drawstring closure",
            ],
            options={"color": _COLORS[:8], "size": _APPAREL_SIZES[:6]},
        ),
        dict(
            noun="Running Shoes",
            query="men's running shoes",
            path="Clothing, Shoes & Jewelry › Men › Shoes › Athletic › Running",
            attrs=["rubber sole", "non slip", "lightweight", "breathable mesh", "arch support"],
            options={"color": ["Black", "White", "Grey", "Navy Blue", "Red"], "size": _SHOE_SIZES},
        ),
        dict(
            noun="Button Down Shirt",
            query="men's casual button-down shirts",
            path="Clothing, Shoes & Jewelry › Men › Clothing › Shirts › Casual Button-Down Shirts",
            attrs=["slim fit", "long sleeve", "button closure", "machine wash", "cotton"],
            options={
                "color": ["White", "Light Blue", "Black", "Khaki"],
                "size": _APPAREL_SIZES[1:6],
            },
        ),
        dict(
            noun="Yoga Pants",
            query="women's leggings",
            path="Clothing, Shoes & Jewelry › Women › Clothing › Leggings",
            attrs=["high waist", "tummy control", "moisture wicking", "four way stretch", "pocket"],
            options={
                "color": ["Black", "Olive Green", "Burgundy", "Grey", "Teal"],
                "size": _APPAREL_SIZES[:5],
            },
        ),
        dict(
            noun="Ankle Boots",
            query="women's boots",
            path="Clothing, Shoes & Jewelry › Women › Shoes › Boots › Ankle & Bootie",
            attrs=["faux leather", "side zipper", "block heel", "rubber sole", "waterproof"],
            options={"color": ["Black", "Brown", "Beige"], "size": _SHOE_SIZES[:9]},
        ),
        dict(
            noun="Baseball Cap",
            query="men's baseball caps",
            path="Clothing, Shoes & Jewelry › Men › Accessories › Hats & Caps › Baseball Caps",
            attrs=["adjustable strap", "cotton", "hand wash", "sun protection"],
            options={"color": ["Black", "Navy Blue", "Khaki", "Red", "Black/White"]},
        ),
    ],
    "garden": [
        dict(
            noun="Console Table",
            query="console tables",
            path=(
                "Home & Kitchen › Furniture"
                " › Living Room Furniture › Tables › Sofa & Console Tables"
            ),
            attrs=["solid wood", "easy assemble", "storage space", "living room", "mid century"],
            options={"color": ["Walnut", "Espresso", "White", "Natural"]},
        ),
        dict(
            noun="Area Rug",
            query="area rugs",
            path="Home & Kitchen › Home Décor › Area Rugs, Runners & Pads › Area Rugs",
            attrs=["non slip", "machine washable", "living room", "stain resistant", "bedroom"],
            options={
                "size": ["2 ft x 3 ft", "5 ft x 7 ft", "8 ft x 10 ft"],
                "color": ["Grey", "Beige", "Navy Blue", "Multicolor"],
            },
        ),
        dict(
            noun="Throw Pillow Covers",
            query="throw pillow covers",
            path=(
                "Home & Kitchen › Bedding"
                " › Decorative Pillows, Inserts & Covers › Throw Pillow Covers"
            ),
            attrs=["double sided", "hidden zipper", "living room", "machine wash", "faux linen"],
            options={
                "size": ["18 x 18 Inch", "20 x 20 Inch"],
                "color": ["Sage Green", "Rust", "Cream", "Grey"],
            },
        ),
        dict(
            noun="Solar Garden Lights",
            query="outdoor lighting",
            path="Patio, Lawn & Garden › Outdoor Décor › Outdoor Lighting › Pathway Lights",
            attrs=["solar powered", "waterproof", "auto on off", "warm white", "easy install"],
            options={"size": ["Pack of 4", "Pack of 8", "Pack of 12"]},
        ),
        dict(
            noun="Shower Curtain",
            query="shower curtains",
            path="Home & Kitchen › Bath › Shower Curtains, Hooks & Liners › Shower Curtains",
            attrs=["water resistant", "machine washable", "rust proof", "heavy duty"],
            options={
                "color": ["White", "Grey", "Blue", "Botanical"],
                "size": ["72 x 72 Inch", "72 x 84 Inch"],
            },
        ),
        dict(
            noun="Bookshelf",
            query="bookcases",
            path="Home & Kitchen › Furniture › Home Office Furniture › Bookcases",
            attrs=[
                "easy assemble",
                "engineered wood",
                "storage space",
                "living room",
                "steel frame",
            ],
            options={"color": ["Black", "Rustic Brown", "White Oak"]},
        ),
    ],
    "electronics": [
        dict(
            noun="Wireless Earbuds",
            query="earbud headphones",
            path="Electronics › Headphones, Earbuds & Accessories › Earbud Headphones",
            attrs=[
                "noise cancelling",
                "bluetooth",
                "long battery life",
                "water resistant",
                "charging case",
            ],
            options={"color": ["Black", "White", "Navy Blue"]},
        ),
        dict(
            noun="Phone Case",
            query="cell phone cases",
            path="Cell Phones & Accessories › Cases, Holsters & Sleeves › Basic Cases",
            attrs=["shockproof", "slim fit", "wireless charging", "tempered glass", "easy install"],
            options={
                "color": ["Clear", "Black", "Pink", "Midnight Green"],
                "size": ["iPhone 13", "iPhone 14", "iPhone 14 Pro"],
            },
        ),
        dict(
            noun="HDMI Cable",
            query="hdmi cables",
            path=(
                "Electronics › Accessories & Supplies"
                " › Audio & Video Accessories › Cables › HDMI Cables"
            ),
            attrs=["high speed", "4k", "gold plated", "braided", "ultra hd"],
            options={"size": ["3 Feet", "6 Feet", "10 Feet", "15 Feet"]},
        ),
        dict(
            noun="Security Camera",
            query="security cameras",
            path="Electronics › Camera & Photo › Video Surveillance › Surveillance Cameras",
            attrs=["night vision", "motion detection", "two way audio", "1080p", "easy install"],
            options={"size": ["1 Pack", "2 Pack", "4 Pack"]},
        ),
        dict(
            noun="Portable Charger",
            query="portable power banks",
            path="Cell Phones & Accessories › Chargers & Power Adapters › Portable Power Banks",
            attrs=["fast charging", "usb c", "high capacity", "led display", "compact"],
            options={"color": ["Black", "White", "Blue"], "size": ["10000mAh", "20000mAh"]},
        ),
        dict(
            noun="Bluetooth Speaker",
            query="portable bluetooth speakers",
            path=(
                "Electronics › Portable Audio & Video"
                " › Portable Speakers & Docks › Portable Bluetooth Speakers"
            ),
            attrs=[
                "waterproof",
                "bluetooth",
                "long battery life",
                "stereo sound",
                "built in microphone",
            ],
            options={"color": ["Black", "Red", "Teal", "Grey"]},
        ),
    ],
    "grocery": [
        dict(
            noun="Protein Shake",
            query="protein drinks",
            path="Grocery & Gourmet Food › Beverages › Sports & Energy Drinks › Protein Drinks",
            attrs=["gluten free", "plant based", "soy free", "high protein", "low sugar"],
            options={
                "flavor name": ["Chocolate", "Vanilla", "Strawberry"],
                "size": ["Pack of 4", "Pack of 12"],
            },
        ),
        dict(
            noun="Green Tea",
            query="green tea",
            path="Grocery & Gourmet Food › Beverages › Coffee, Tea & Cocoa › Tea › Green",
            attrs=[
                "caffeine free",
                "organic",
                "non gmo",
                "individually wrapped",
                "natural ingredients",
            ],
            options={
                "flavor name": ["Jasmine", "Mint", "Lemon", "Original"],
                "size": ["20 Count", "100 Count"],
            },
        ),
        dict(
            noun="Trail Mix",
            query="snack mixes",
            path="Grocery & Gourmet Food › Snack Foods › Trail Mix",
            attrs=["gluten free", "high protein", "resealable bag", "non gmo", "kosher"],
            options={
                "flavor name": ["Sweet & Salty", "Dark Chocolate", "Tropical"],
                "size": ["6 Ounce", "1 Pound"],
            },
        ),
        dict(
            noun="Olive Oil",
            query="olive oil",
            path="Grocery & Gourmet Food › Pantry Staples › Cooking Oils › Olive",
            attrs=["extra virgin", "cold pressed", "organic", "non gmo", "glass bottle"],
            options={"size": ["16.9 Fl Oz", "33.8 Fl Oz", "101 Fl Oz"]},
        ),
        dict(
            noun="Coffee Beans",
            query="whole coffee beans",
            path=(
                "Grocery & Gourmet Food › Beverages"
                " › Coffee, Tea & Cocoa › Coffee › Whole Coffee Beans"
            ),
            attrs=["medium roast", "single origin", "fair trade", "organic", "low acid"],
            options={"size": ["12 Ounce", "2 Pound", "5 Pound"]},
        ),
        dict(
            noun="Gummy Candy",
            query="gummy candies",
            path="Grocery & Gourmet Food › Candy & Chocolate › Gummy Candies",
            attrs=["fat free", "gluten free", "individually wrapped", "vegan", "real fruit"],
            options={
                "flavor name": ["Assorted", "Sour", "Peach"],
                "size": ["Pack of 6", "Pack of 24"],
            },
        ),
    ],
}

#: Beauty paths above omit their common root, which is added when a product is made.
_BEAUTY_ROOT = "Beauty & Personal Care"
_ADJECTIVES = [
    "Premium", "Classic", "Modern", "Deluxe", "Essential", "Everyday", "Ultra", "Pro", "Signature",
    "Compact", "Vintage", "Soft", "Heavy Duty", "Lightweight",
]  # fmt: skip
_AUDIENCE = [
    "for Women",
    "for Men",
    "for Home",
    "for Kids",
    "for Travel",
    "for Office",
    "for Gift",
    "",
]
_SYLLABLES = [
    "lu",
    "mo",
    "ra",
    "ve",
    "ta",
    "ki",
    "no",
    "sa",
    "zen",
    "bri",
    "qua",
    "dor",
    "fel",
    "ix",
]
_OPENERS = [
    "Meet the {brand} {noun}, made for people who care about {a0}.",
    "Our {noun} combines {a0} and {a1} in one {adj} design.",
    "Upgrade your routine with this {adj} {noun} from {brand}.",
    "The {brand} {noun} is built around {a0}, with {a1} for everyday use.",
]
_MIDDLES = [
    "Every unit is checked by hand before it ships.",
    "It is easy to use and easy to clean.",
    "Thousands of customers choose it for its reliable quality.",
    "Designed and tested by a small team with years of experience.",
    "A thoughtful gift for family and friends.",
    "Backed by a 30 day satisfaction guarantee.",
]
_BULLETS = [
    "{A0}: designed with {a0} so you get the result you expect.",
    "{A1} - a detail that makes a real difference every day.",
    "WHAT YOU GET: one {noun} from {brand}, ready to use.",
    "Quality you can trust: {a2} and carefully finished.",
    "Friendly support: contact us with any question about your {noun}.",
]
_INSTRUCTIONS = [
    "i need a {noun_l} that is {attrs}",
    "Find me {query} with {attrs}",
    "i am looking for {attrs} {noun_l}",
    "i want {query} with {attrs}",
]


def _brand(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _asin(rng: random.Random, used: set[str]) -> str:
    while True:
        asin = "B0" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
        if asin not in used:
            used.add(asin)
            return asin


def _pricing(rng: random.Random) -> str:
    roll = rng.random()
    low = round(rng.uniform(4, 180), 2)
    if roll < 0.12:
        return ""
    if roll < 0.35:
        return f"${low:,.2f}${low + round(rng.uniform(3, 60), 2):,.2f}"
    return f"${low:,.2f}"


def _customization(rng: random.Random, spec: dict[str, Any], asin: str) -> dict[str, Any] | str:
    names = [n for n in spec["options"] if rng.random() < 0.85]
    if not names:
        return ""
    options: dict[str, Any] = {}
    for name in names:
        pool = spec["options"][name]
        values = sorted(
            rng.sample(pool, rng.randint(min(2, len(pool)), min(5, len(pool)))), key=pool.index
        )
        options[name.title()] = [
            {"value": v, "is_selected": i == 0, "is_available": True, "asin": asin}
            for i, v in enumerate(values)
        ]
    return options


def _text_fields(
    rng: random.Random, spec: dict[str, Any], brand: str, attrs: list[str]
) -> dict[str, Any]:
    adjective = rng.choice(_ADJECTIVES)
    fill = {
        "brand": brand,
        "noun": spec["noun"].lower(),
        "adj": adjective.lower(),
        "a0": attrs[0],
        "a1": attrs[1],
        "a2": attrs[-1],
        "A0": attrs[0].upper(),
        "A1": attrs[1].capitalize(),
    }
    title_attrs = " ".join(a.title() for a in rng.sample(attrs, min(2, len(attrs))))
    title = " ".join(
        part
        for part in (brand, adjective, title_attrs, spec["noun"], rng.choice(_AUDIENCE))
        if part
    )
    sentences = [rng.choice(_OPENERS)] + rng.sample(_MIDDLES, rng.randint(1, 3))
    bullets = rng.sample(_BULLETS, rng.randint(3, 5))
    return {
        "name": title,
        "full_description": " ".join(s.format(**fill) for s in sentences),
        "small_description": [b.format(**fill) for b in bullets],
    }


def _product(
    rng: random.Random, category: str, spec: dict[str, Any], asin: str
) -> tuple[dict[str, Any], list[str]]:
    brand = _brand(rng)
    attrs = rng.sample(spec["attrs"], min(len(spec["attrs"]), rng.randint(3, 5)))
    path = f"{_BEAUTY_ROOT} › {spec['path']}" if category == "beauty" else spec["path"]
    record = {**_text_fields(rng, spec, brand, attrs)}
    record.update(
        pricing=_pricing(rng),
        images=[""],
        product_category=path,
        average_rating=round(rng.uniform(3.0, 5.0), 1),
        customization_options=_customization(rng, spec, asin),
        asin=asin,
        category=category,
        query=spec["query"],
        page=rng.randint(1, 20),
        brand=brand,  # dropped by the loader, like upstream's scraped records
    )
    return record, attrs


def _annotation(rng: random.Random, spec: dict[str, Any], attrs: list[str]) -> dict[str, Any]:
    annotation: dict[str, Any] = {"attributes": attrs}
    if rng.random() < INSTRUCTION_RATE:
        wanted = rng.sample(attrs, rng.randint(1, min(3, len(attrs))))
        template = rng.choice(_INSTRUCTIONS)
        annotation["instruction"] = template.format(
            noun_l=spec["noun"].lower(), query=spec["query"], attrs=", ".join(wanted)
        )
        annotation["instruction_attributes"] = wanted
    return annotation


def generate_catalogue(
    num_products: int = EMBEDDED_NUM_PRODUCTS, seed: int = EMBEDDED_SEED
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Generate ``(items_shuffle records, items_ins_v2 mapping)`` in upstream's raw schema.

    Args:
        num_products: Number of products (spread evenly over the five categories, shuffled).
        seed: Seed of the generator; the same arguments always give the same data.

    Returns:
        The raw product list and the ASIN -> attributes/instruction mapping.

    Example:
        >>> items, annotations = generate_catalogue(10, seed=1)
        >>> len(items), items[0]["asin"] in annotations
        (10, True)
    """
    rng = random.Random(seed)
    used: set[str] = set()
    categories = sorted(_TYPES)
    items, annotations = [], {}
    for position in range(num_products):
        category = categories[position % len(categories)]
        spec = rng.choice(_TYPES[category])
        asin = _asin(rng, used)
        record, attrs = _product(rng, category, spec, asin)
        items.append(record)
        annotations[asin] = _annotation(rng, spec, attrs)
    rng.shuffle(items)
    return items, annotations


def _gzip_json(data: Any) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(json.dumps(data).encode("ascii"))
    return buffer.getvalue()


def write_catalogue(
    out_dir: str | Path, num_products: int = EMBEDDED_NUM_PRODUCTS, seed: int = EMBEDDED_SEED
) -> list[Path]:
    """Write the gzipped ``items_shuffle`` and ``items_ins_v2`` files (byte-for-byte reproducible).

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, annotations = generate_catalogue(num_products, seed)
    paths = [out / ITEMS_NAME, out / ATTRIBUTES_NAME]
    for path, data in zip(paths, (items, annotations), strict=True):
        path.write_bytes(_gzip_json(data))
    return paths
