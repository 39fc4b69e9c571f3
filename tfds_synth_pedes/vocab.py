"""Word lists shared by SPAC captions, the phrase finder, attribute labels and the renderer.

One place for the attribute vocabulary so that what the renderer draws, what captions say and
what the phrase finder masks can never drift apart.
"""

from __future__ import annotations

SLOTS: tuple[str, ...] = ("gender", "head", "upper", "lower", "shoes", "others")
UNKNOWN = "unknown"

# Base colours: name -> RGB used by the renderer. Chosen to be far apart for a small CNN.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (238, 238, 234),
    "grey": (132, 132, 132),
    "red": (205, 35, 35),
    "blue": (35, 75, 205),
    "green": (35, 150, 60),
    "yellow": (238, 212, 45),
    "pink": (245, 140, 190),
    "purple": (135, 55, 170),
    "orange": (245, 135, 25),
    "brown": (125, 80, 40),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (22, 20, 20),
    "brown": (100, 62, 30),
    "blonde": (222, 190, 105),
    "grey": (165, 165, 165),
}
# Shades a colour may take ('' = plain); black/white/yellow/orange stay plain.
SHADES: dict[str, tuple[str, ...]] = {
    "grey": ("", "dark", "light"),
    "red": ("", "dark"),
    "blue": ("", "dark", "light"),
    "green": ("", "dark", "light"),
    "pink": ("", "light"),
    "purple": ("", "light"),
    "brown": ("", "dark", "light"),
}
# How captions may say a shaded colour (SPAC "shade words").
SHADE_WORDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("blue", "dark"): ("dark blue", "navy blue", "navy"),
    ("blue", "light"): ("light blue", "sky blue"),
    ("red", "dark"): ("dark red", "maroon", "burgundy"),
    ("grey", "dark"): ("dark grey", "charcoal"),
    ("grey", "light"): ("light grey", "silver"),
    ("green", "dark"): ("dark green", "olive"),
    ("green", "light"): ("light green",),
    ("brown", "dark"): ("dark brown",),
    ("brown", "light"): ("light brown", "tan", "khaki"),
    ("pink", "light"): ("light pink", "pale pink"),
    ("purple", "light"): ("light purple", "lavender"),
}
COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {"grey": ("grey", "gray"), "blonde": ("blonde", "blond")}

# Garment types of the procedural world: canonical name -> caption synonyms (gender-neutral ones first).
UPPER_TYPES: dict[str, tuple[str, ...]] = {
    "t-shirt": ("t-shirt", "tee", "short-sleeved t-shirt"),
    "shirt": ("shirt", "long-sleeved shirt"),
    "coat": ("coat", "long coat", "overcoat"),
    "vest": ("vest", "tank top", "sleeveless vest"),
}
LOWER_TYPES: dict[str, tuple[str, ...]] = {
    "pants": ("pants", "trousers", "long pants", "slacks"),
    "shorts": ("shorts",),
    "skirt": ("skirt",),
}
SHOE_TYPES: dict[str, tuple[str, ...]] = {"shoes": ("shoes", "sneakers"), "boots": ("boots",)}
ACCESSORIES: dict[str, tuple[str, ...]] = {
    "backpack": ("backpack", "rucksack"),
    "handbag": ("handbag", "purse"),
    "hat": ("hat", "cap"),
}
GENDERS: dict[str, tuple[str, ...]] = {"man": ("man", "guy", "gentleman"), "woman": ("woman", "lady", "girl")}
HAIR_LENGTHS: tuple[str, ...] = ("short", "long")
FEMALE_ONLY_WORDS: frozenset[str] = frozenset({"skirt", "handbag", "purse"})

# ---- Phrase-finder keyword sets (PLIP paper App. A.7.3 builds its own from CUHK/ICFG nouns): broad, to cover
# human captions too. ----
COLOUR_WORDS: frozenset[str] = frozenset(
    """black white grey gray red blue green yellow pink purple orange brown beige khaki navy maroon
    burgundy tan silver gold golden blonde blond cream olive teal violet lavender charcoal turquoise
    multicolored multi-colored colorful colourful camouflage""".split()
)
SHADE_MODIFIERS: frozenset[str] = frozenset("dark light bright pale deep sky".split())
OTHER_MODIFIERS: frozenset[str] = frozenset(
    """long short long-sleeved short-sleeved sleeveless striped plaid checkered checked patterned
    floral printed denim leather curly wavy""".split()
)
MODIFIER_WORDS: frozenset[str] = COLOUR_WORDS | SHADE_MODIFIERS | OTHER_MODIFIERS

HEAD_NOUNS: dict[str, frozenset[str]] = {
    "gender": frozenset("man men woman women lady girl boy guy gentleman male female".split()),
    "head": frozenset("hair ponytail".split()),
    "upper": frozenset(
        """shirt shirts t-shirt tshirt tee top blouse jacket coat overcoat sweater hoodie sweatshirt vest
        cardigan blazer suit dress uniform polo jersey parka""".split()
    )
    | {"tank top"},
    "lower": frozenset("pants trousers jeans shorts skirt leggings tights slacks capris".split()),
    "shoes": frozenset("shoes shoe sneakers boots sandals heels slippers trainers loafers socks".split()),
    "others": frozenset(
        """backpack rucksack bag handbag purse suitcase umbrella hat cap glasses sunglasses scarf belt
        helmet mask gloves briefcase""".split()
    ),
}
# Heads that only count as an attribute phrase with a modifier before them ("black hair", not "hair").
NEEDS_MODIFIER: frozenset[str] = frozenset({"hair", "top"})
HEAD_TO_SLOT: dict[str, str] = {w: slot for slot, words in HEAD_NOUNS.items() for w in words}

# Canonical forms, used to turn free-text attributes into labels.
COLOUR_CANON: dict[str, str] = {
    **{c: c for c in COLOURS},
    "gray": "grey", "navy": "blue", "maroon": "red", "burgundy": "red", "silver": "grey",
    "charcoal": "grey", "tan": "brown", "khaki": "brown", "beige": "brown", "olive": "green",
    "lavender": "purple", "violet": "purple", "blonde": "blonde", "blond": "blonde", "golden": "blonde",
}
HEAD_CANON: dict[str, str] = {
    "tee": "t-shirt", "tshirt": "t-shirt", "t-shirt": "t-shirt", "polo": "t-shirt", "jersey": "t-shirt",
    "shirt": "shirt", "shirts": "shirt", "blouse": "shirt", "sweater": "shirt", "hoodie": "shirt",
    "sweatshirt": "shirt", "cardigan": "shirt",
    "coat": "coat", "overcoat": "coat", "jacket": "coat", "parka": "coat", "blazer": "coat",
    "vest": "vest", "tank top": "vest",
    "pants": "pants", "trousers": "pants", "slacks": "pants", "jeans": "pants", "leggings": "pants",
    "shorts": "shorts", "skirt": "skirt",
    "shoes": "shoes", "shoe": "shoes", "sneakers": "shoes", "trainers": "shoes", "loafers": "shoes",
    "boots": "boots",
    "backpack": "backpack", "rucksack": "backpack", "handbag": "handbag", "purse": "handbag",
    "bag": "handbag", "hat": "hat", "cap": "hat",
    "man": "man", "men": "man", "guy": "man", "gentleman": "man", "boy": "man", "male": "man",
    "woman": "woman", "women": "woman", "lady": "woman", "girl": "woman", "female": "woman",
    "hair": "hair", "ponytail": "hair",
}
PLURAL_HEADS: frozenset[str] = frozenset(
    "pants trousers jeans shorts leggings tights slacks capris shoes sneakers boots sandals heels "
    "slippers trainers loafers socks glasses sunglasses gloves men women shirts".split()
)
# Accessories one wears rather than carries.
WORN_ACCESSORIES: frozenset[str] = frozenset("hat cap glasses sunglasses scarf belt helmet mask gloves".split())
