"""The caption language of the shifted text-ReID stand-ins: two human-like styles unlike SPAC's.

Style A reads like CUHK-PEDES (plain, ~23 words, two captions per image), style B like ICFG-PEDES
(longer, with fit, detail and position words, one caption per image). Both have their own words for
colours and garments (not `vocab.py`'s), their own clause orders and fillers, and leave an
attribute out now and then, yet always name the gender and the upper garment so text finds a person.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np

Rng = np.random.Generator


@dataclasses.dataclass(frozen=True)
class Traits:
    """One person's caption-visible attributes, by canonical name (see `Lexicon` for the words)."""

    female: bool
    hair_length: str  # short | long
    hair: str  # black | brown | blonde | grey | auburn
    upper_type: str  # t-shirt | shirt | coat | vest
    upper: str  # a palette colour name
    lower_type: str  # pants | shorts | skirt
    lower: str
    shoes_type: str  # shoes | boots
    shoes: str
    extra_type: str  # none | backpack | handbag | hat
    extra: str

    def key(self) -> str:
        """The identity key: two people with one key could not be told apart from text."""
        extra = self.extra_type if self.extra_type == "none" else f"{self.extra} {self.extra_type}"
        return "|".join(("female" if self.female else "male", f"{self.hair_length} {self.hair}",
                         f"{self.upper} {self.upper_type}", f"{self.lower} {self.lower_type}",
                         f"{self.shoes} {self.shoes_type}", extra))


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """One style's words. Garment tables: canonical type -> (neutral words, extra words for women)."""

    colours: dict[str, tuple[str, ...]]
    hair_colours: dict[str, tuple[str, ...]]
    hair_lengths: dict[str, tuple[str, ...]]
    garments: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
    people: dict[bool, tuple[str, ...]]  # female -> nouns
    omit: dict[str, float]  # slot -> chance a caption leaves it out
    length: tuple[int, int]  # accepted caption length in words (resampled outside)


# Plural garment nouns (no article, "a pair of" now and then).
PLURALS = frozenset(
    """jeans trousers chinos joggers bermudas shorts cut-offs trainers runners loafers sneakers flats boots
    slacks denims corduroys pants leggings moccasins""".split()
)

STYLE_A = Lexicon(
    colours={
        "black": ("black", "jet-black", "coal-black"),
        "white": ("white", "snow-white", "off-white"),
        "grey": ("ash-grey", "slate", "stone-coloured"),
        "red": ("crimson", "scarlet", "cherry-red"),
        "blue": ("cobalt", "azure", "royal-blue"),
        "navy": ("midnight-blue", "ink-blue", "indigo"),
        "green": ("emerald", "jade", "forest-green"),
        "yellow": ("mustard", "lemon", "canary-yellow"),
        "pink": ("rose", "fuchsia", "salmon"),
        "purple": ("violet", "plum", "mauve"),
        "orange": ("tangerine", "amber", "pumpkin"),
        "brown": ("chocolate", "coffee", "chestnut"),
        "beige": ("beige", "sand", "camel"),
        "teal": ("teal", "turquoise", "aqua"),
    },
    hair_colours={
        "black": ("black", "dark"), "brown": ("brown", "brunette"), "blonde": ("fair", "golden"),
        "grey": ("grey", "silvery"), "auburn": ("auburn", "reddish"),
    },
    hair_lengths={"short": ("short", "cropped", "close-cut"), "long": ("long", "shoulder-length", "lengthy")},
    garments={
        "t-shirt": (("tee shirt", "short sleeve top", "polo shirt", "crew-neck tee"), ()),
        "shirt": (("long sleeve top", "sweater", "button-up shirt", "jumper"), ("blouse",)),
        "coat": (("jacket", "parka", "windbreaker", "raincoat"), ()),
        "vest": (("sleeveless top", "singlet", "sleeveless tee"), ("camisole",)),
        "pants": (("jeans", "trousers", "chinos", "joggers"), ()),
        "shorts": (("bermudas", "knee-length shorts", "cut-offs"), ()),
        "skirt": ((), ("mini skirt", "pleated skirt", "skirt")),
        "shoes": (("trainers", "runners", "loafers", "sneakers"), ("flats",)),
        "boots": (("ankle boots", "combat boots", "boots"), ()),
        "backpack": (("knapsack", "backpack", "school bag", "daypack"), ()),
        "handbag": (("tote", "shoulder bag", "tote bag", "clutch bag"), ()),
        "hat": (("beanie", "baseball cap", "bucket hat"), ()),
    },
    people={False: ("man", "young man", "male pedestrian"), True: ("woman", "young woman", "female pedestrian")},
    omit={"hair": 0.2, "lower": 0.08, "shoes": 0.3, "extra": 0.1},
    length=(15, 30),
)

STYLE_B = Lexicon(
    colours={
        "black": ("black", "ebony", "onyx", "pitch-black"),
        "white": ("white", "pearl", "chalk-white", "milky"),
        "grey": ("gray", "graphite", "smoky", "charcoal"),
        "red": ("scarlet", "ruby", "brick-red", "vermilion"),
        "blue": ("cobalt", "sapphire", "cerulean", "denim-blue"),
        "navy": ("navy", "midnight", "deep-navy"),
        "green": ("moss-green", "sage", "mint", "olive"),
        "yellow": ("golden", "ochre", "sunflower-yellow"),
        "pink": ("blush", "magenta", "coral"),
        "purple": ("lilac", "aubergine", "orchid"),
        "orange": ("copper", "burnt-orange", "apricot"),
        "brown": ("walnut", "cinnamon", "caramel", "espresso"),
        "beige": ("oatmeal", "buff", "taupe", "khaki"),
        "teal": ("teal", "petrol-blue", "sea-green"),
    },
    hair_colours={
        "black": ("jet-black", "raven", "dark"), "brown": ("chestnut", "light-brown", "mousy"),
        "blonde": ("sandy", "platinum", "honey-coloured"), "grey": ("greying", "salt-and-pepper", "silver-white"),
        "auburn": ("ginger", "copper-red", "auburn"),
    },
    hair_lengths={"short": ("cropped", "buzzed", "neatly trimmed", "short"),
                  "long": ("flowing", "waist-length", "shoulder-length", "long")},
    garments={
        "t-shirt": (("crewneck tee", "short-sleeve jersey", "polo", "graphic tee"), ()),
        "shirt": (("pullover", "hoodie", "sweatshirt", "cardigan", "turtleneck"), ("long-sleeved blouse",)),
        "coat": (("trench coat", "puffer jacket", "anorak", "blazer", "overcoat"), ()),
        "vest": (("sleeveless jersey", "muscle shirt", "gilet"), ("halter top",)),
        "pants": (("slacks", "denims", "corduroys", "cargo pants", "dress pants"), ("leggings",)),
        "shorts": (("board shorts", "cargo shorts", "running shorts"), ()),
        "skirt": ((), ("pencil skirt", "maxi skirt", "a-line skirt")),
        "shoes": (("running shoes", "canvas shoes", "moccasins", "trainers"), ("ballet flats",)),
        "boots": (("hiking boots", "rain boots", "work boots"), ("knee-high boots",)),
        "backpack": (("haversack", "knapsack", "backpack", "rucksack"), ()),
        "handbag": (("satchel", "messenger bag", "tote", "purse"), ()),
        "hat": (("fedora", "peaked cap", "beret", "sun visor"), ()),
    },
    people={False: ("male pedestrian", "middle-aged man", "young fellow", "gentleman", "teenage boy"),
            True: ("female pedestrian", "middle-aged woman", "young lady", "teenage girl", "woman")},
    omit={"hair": 0.08, "lower": 0.03, "shoes": 0.1, "extra": 0.05},
    length=(24, 40),
)


def _pick(rng: Rng, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _fmt(template: str, words: dict[str, str]) -> str:
    """Fills {name} slots; a capitalised slot name ({He}) gives a capitalised word."""
    return re.sub(r"\{(\w+)\}", lambda m: (words[m.group(1).lower()].capitalize() if m.group(1)[0].isupper()
                                          else words[m.group(1)]), template)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def num_words(text: str) -> int:
    """Caption length in words, as a reader counts them ('jet-black' is one)."""
    return len(text.split())


class _Person:
    """The words one caption uses for one person (drawn once per caption)."""

    def __init__(self, t: Traits, lex: Lexicon, rng: Rng):
        self.t, self.lex, self.rng = t, lex, rng
        self.he, self.his = ("she", "her") if t.female else ("he", "his")
        self.noun = _pick(rng, lex.people[t.female])
        self.kept = {slot: rng.random() >= p for slot, p in lex.omit.items()}
        self.kept["extra"] = self.kept["extra"] and t.extra_type != "none"
        self.kept["upper"] = True

    def colour(self, name: str) -> str:
        return _pick(self.rng, self.lex.colours[name])

    def garment(self, kind: str) -> str:
        neutral, female = self.lex.garments[kind]
        return _pick(self.rng, neutral + female if self.t.female else neutral or female)

    def hair(self) -> str:
        return (f"{_pick(self.rng, self.lex.hair_lengths[self.t.hair_length])} "
                f"{_pick(self.rng, self.lex.hair_colours[self.t.hair])} hair")

    def item(self, slot: str, prefix: str = "", article: bool = True) -> str:
        """'a crimson jacket', 'cobalt jeans' / 'a pair of cobalt jeans' (plural nouns)."""
        kind, colour = {"upper": (self.t.upper_type, self.t.upper), "lower": (self.t.lower_type, self.t.lower),
                        "shoes": (self.t.shoes_type, self.t.shoes), "extra": (self.t.extra_type, self.t.extra)}[slot]
        noun = self.garment(kind)
        words = " ".join(w for w in (prefix, self.colour(colour), noun) if w)
        if not article:
            return words
        if noun.split()[-1] in PLURALS:
            return f"a pair of {words}" if self.rng.random() < 0.3 else words
        return ("an " if words[0] in "aeiou" else "a ") + words

    @property
    def words(self) -> dict[str, str]:
        return {"he": self.he, "his": self.his, "noun": self.noun}


def _listing(parts: Sequence[str], rng: Rng) -> str:
    if len(parts) == 1:
        return parts[0]
    joiner = _pick(rng, (" and ", " along with ", " with ")) if len(parts) == 2 else " and "
    return ", ".join(parts[:-1]) + joiner + parts[-1]


def _order(rng: Rng, sentences: list[str]) -> list[str]:
    return [sentences[int(i)] for i in rng.permutation(len(sentences))]


def _caption_a(t: Traits, rng: Rng, back: bool) -> str:
    """CUHK-like: one clothing sentence, then hair / shoes / bag / a filler in any order."""
    p = _Person(t, STYLE_A, rng)
    w = p.words
    subject = _fmt(_pick(rng, ("a {noun}", "the {noun}", "this {noun}")), w)
    hair_first = p.kept["hair"] and rng.random() < 0.4
    if hair_first:
        subject += " with " + p.hair()
    worn = [p.item("upper")] + ([p.item("lower")] if p.kept["lower"] else [])
    shoes_in_list = p.kept["shoes"] and rng.random() < 0.5
    if shoes_in_list:
        worn.append(p.item("shoes"))
    verb = _pick(rng, ("is wearing", "wears", "has on", "is dressed in", "is in"))
    first = _sentence(f"{subject} {verb} {_listing(worn, rng)}")
    rest: list[str] = []
    if p.kept["hair"] and not hair_first:
        hair = p.hair()
        rest.append(_sentence(_fmt(_pick(rng, ("{He} has {hair}", "{His} {hair} is clearly visible",
                                                "{He} wears {his} {hair} loose")), {**w, "hair": hair})))
    if p.kept["shoes"] and not shoes_in_list:
        shoes = p.item("shoes")
        plural = shoes.split()[-1] in PLURALS or shoes.startswith("a pair")
        rest.append(_sentence(_fmt(_pick(rng, ("{He} also has {shoes} on", "on {his} feet {be} {shoes}",
                                                "{shoes} complete the outfit")),
                                   {**w, "shoes": shoes, "be": "are" if plural else "is"})))
    if p.kept["extra"]:
        bag = p.item("extra")
        options = {"backpack": ("{He} is carrying {bag} on {his} back", "{He} has {bag} strapped on"),
                   "handbag": ("{He} is carrying {bag}", "{He} holds {bag} in one hand",
                               "{bag} hangs from {his} shoulder"),
                   "hat": ("{He} has {bag} on {his} head", "{bag} covers {his} head")}[t.extra_type]
        rest.append(_sentence(_fmt(_pick(rng, options), {**w, "bag": bag})))
    if rng.random() < 0.35:
        way = _pick(rng, ("and facing away", "with {his} back to us") if back else ("toward us", "in our direction"))
        fillers = ("the pedestrian is walking " + way, "{He} is walking alone " + way, "{He} seems to be in a hurry",
                   "{He} is strolling down the pavement")
        rest.append(_sentence(_fmt(_pick(rng, fillers), w)))
    return " ".join([first, *_order(rng, rest)])


_FITS = ("loose", "baggy", "fitted", "slim", "oversized", "snug")
_UPPER_DETAIL = {
    "t-shirt": ("with a round neckline", "with a small logo on the chest"),
    "shirt": ("with the sleeves rolled up", "with a high collar"),
    "coat": ("zipped up to the chin", "left unbuttoned", "that reaches {his} thighs"),
    "vest": ("that leaves {his} arms bare", "with thin straps"),
}
_LOWER_DETAIL = {
    "pants": ("that reach {his} ankles", "rolled at the cuffs"),
    "shorts": ("that stop above {his} knees",),
    "skirt": ("that ends at {his} knees", "that flares out"),
}
# (after "has ... hair", after "hair is")
_HAIR_DETAIL = {
    "short": (("that is neatly combed", "neatly combed"), ("swept to one side",) * 2, ("", "clearly visible")),
    "long": (("tied into a ponytail",) * 2, ("falling past {his} shoulders",) * 2, ("worn loose",) * 2),
}


def _caption_b(t: Traits, rng: Rng, back: bool) -> str:
    """ICFG-like: a detailed outfit sentence with fit and detail words, then the rest in any order."""
    p = _Person(t, STYLE_B, rng)
    w = p.words
    side = _pick(rng, ("left", "right"))
    upper = p.item("upper", _pick(rng, _FITS) if rng.random() < 0.5 else "")
    if rng.random() < 0.6:
        upper += " " + _fmt(_pick(rng, _UPPER_DETAIL[t.upper_type]), w)
    clauses = [upper]
    if p.kept["lower"]:
        lower = p.item("lower", _pick(rng, _FITS) if rng.random() < 0.4 else "")
        if rng.random() < 0.35:
            lower += " " + _fmt(_pick(rng, _LOWER_DETAIL[t.lower_type]), w)
        clauses.append(lower)
    opener = _pick(rng, ("the {noun} in this picture", "a {noun}", "this {noun}", "here we see a {noun} who"))
    verb = _pick(rng, ("is clad in", "sports", "is dressed in", "has on"))
    link = _pick(rng, (" paired with ", " matched with ", ", together with "))
    outfit = _sentence(_fmt(opener, w) + f" {verb} " + link.join(clauses))
    rest: list[str] = []
    if p.kept["hair"]:
        options = _HAIR_DETAIL[t.hair_length]
        has, is_ = (_fmt(d, w) for d in options[int(rng.integers(len(options)))])
        rest.append(_sentence(_fmt(_pick(rng, ("{He} has {hair} {has}", "{His} {hair} is {is}")),
                                   {**w, "hair": p.hair(), "has": has, "is": is_})))
    if p.kept["shoes"]:
        shoes = p.item("shoes") + (" " + _pick(rng, (f"with {p.colour(_pick(rng, ('white', 'black', 'grey')))} soles",
                                                     "with thick soles", "with laces")) if rng.random() < 0.4 else "")
        rest.append(_sentence(_fmt(_pick(rng, ("for footwear {he} has chosen {shoes}", "{His} feet are in {shoes}",
                                                "{He} completes the look with {shoes}")), {**w, "shoes": shoes})))
    if p.kept["extra"]:
        bag = p.item("extra")
        options = {"backpack": ("{bag} is slung across {his} back", "{He} carries {bag} over {his} {side} shoulder"),
                   "handbag": ("{He} carries {bag} in {his} {side} hand", "{bag} hangs at {his} {side} side"),
                   "hat": ("{bag} sits on top of {his} head", "{He} is wearing {bag} pulled low")}[t.extra_type]
        rest.append(_sentence(_fmt(_pick(rng, options), {**w, "bag": bag, "side": side})))
    if rng.random() < 0.35:
        view = ("seen from behind", "facing away from the lens") if back else ("facing the lens", "seen from the front")
        rest.append(_sentence(_fmt(_pick(rng, ("the photo shows {him} " + _pick(rng, view),
                                                "{He} looks like {he} is heading somewhere",
                                                "the shot was taken from a distance")),
                                   {**w, "him": "her" if t.female else "him"})))
    return " ".join([outfit, *_order(rng, rest)])


STYLES: dict[str, tuple[Lexicon, Callable[[Traits, Rng, bool], str]]] = {"A": (STYLE_A, _caption_a),
                                                                       "B": (STYLE_B, _caption_b)}


def describe(t: Traits, style: str, rng: Rng, back: bool = False, tries: int = 12) -> str:
    """One caption of `t` in `style` ('A' | 'B'); `back`: the image shows the person from behind.
    Resampled (same rng) until its length is in the style's range; else the closest of the tries."""
    lex, make = STYLES[style]
    lo, hi = lex.length
    best, miss = "", None
    for _ in range(tries):
        text = make(t, rng, back)
        n = num_words(text)
        off = max(lo - n, n - hi, 0)
        if off == 0:
            return text
        if miss is None or off < miss:
            best, miss = text, off
    return best


def tokens(text: str) -> list[str]:
    """The released `processed_tokens` of one caption: lower-case words and hyphenated words."""
    return re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower())
