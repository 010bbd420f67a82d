"""Every country as merchants name it: ISO 3166-1 alpha-2 codes by name and by adjective.

Names come from pycountry (ISO 3166-1: the short, common and official names, "Korea, Republic of"
also read as "Republic of Korea") and from countryinfo (everyday English names such as "Ivory Coast",
and the demonyms: "German", "Brazilian", "New Zealander"). A few short names merchants use that
neither list has are added here (`_EXTRA_NAMES`). Everything is compared lower-cased, without
accents ("Türkiye" is "turkiye").

A word that names more than one country is ambiguous and maps to no code: "Congolese", "Dominican",
"Korea". The exception is a demonym shared only between a country and its own territories, where
everyone means the country ("French", "American", "Chinese": `_HOME`). A name that also means a place
that is no country ("Georgia", also a US state) is ambiguous too, and parts of the United Kingdom
("Scottish"; countryinfo even gives "Welsh" as the UK's demonym) are refused (`_AMBIGUOUS`).
"""
from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from functools import cache

import pycountry
from countryinfo import all_countries

# Short names people use that neither list has.
_EXTRA_NAMES = {
    "US": ("us", "usa", "u.s.", "u.s.a.", "america", "the states"), "GB": ("uk", "u.k.", "britain", "great britain"),
    "AE": ("uae", "the emirates"), "CD": ("drc", "dr congo"), "NL": ("holland",), "MM": ("burma",),
    "VA": ("vatican",), "CZ": ("czechia",), "MK": ("macedonia",),
}
_EXTRA_ADJECTIVES = {
    "AR": ("argentine", "argentinian"), "SA": ("saudi",), "KG": ("kyrgyz",), "TJ": ("tajik",), "IS": ("icelandic",),
    "GB": ("brit",), "PH": ("philippine",), "NZ": ("kiwi",), "LU": ("luxembourgish",), "SK": ("slovakian",),
    "SI": ("slovenian",), "BA": ("bosnian",), "KR": ("south korean",), "KP": ("north korean",),
}
# A demonym shared between a country and its territories means the country.
_HOME = {"american": "US", "chinese": "CN", "french": "FR", "indian": "IN", "norwegian": "NO", "british": "GB"}
# Names that also mean something else, or more than one country, whatever the lists say: what to
# tell the merchant instead of guessing.
_COULD_BE = {
    "georgia": "the country Georgia or the US state (for the country, say “Georgian customers”)",
    "congo": "the Republic of the Congo or DR Congo", "korea": "South Korea or North Korea",
    "korean": "South Korea or North Korea", "virgin islands": "the British or the US Virgin Islands",
}
_PART_OF_UK = ("england", "english", "scotland", "scottish", "wales", "welsh", "northern ireland", "northern irish")
_AMBIGUOUS = {
    **{alias: f"“{alias}” could mean {meanings}." for alias, meanings in _COULD_BE.items()},
    **{alias: f"“{alias}” is part of the United Kingdom and I can only filter by country (say “UK customers”)."
       for alias in _PART_OF_UK},
}


@dataclass(frozen=True)
class Countries:
    codes: dict[str, str]  # lower-case name or adjective: alpha-2
    ambiguous: dict[str, str]  # lower-case name: why it names no one country, for the merchant
    adjectives: frozenset[str]  # those of `codes` that are demonyms ("german"), which may take a plural s

    def aliases(self) -> list[str]:
        """Every name and adjective known, ambiguous ones too, longest first (so a regex alternation
        prefers "south sudan" to "sudan")."""
        return sorted({*self.codes, *self.ambiguous}, key=lambda alias: (-len(alias), alias))


def plain(text: str) -> str:
    """Lower case without accents, each character kept in its place ("Türkiye" → "turkiye")."""
    return "".join(_plain_char(char) for char in text.lower())


def _plain_char(char: str) -> str:
    stripped = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    return stripped if len(stripped) == 1 else char


def _variants(name: str) -> set[str]:
    """"Korea, Republic of" → also "republic of korea"; "Saint Lucia" → also "st lucia", "st. lucia";
    parenthesised parts dropped ("Falkland Islands (Malvinas)")."""
    found = {plain(name).strip(), plain(re.sub(r"\s*\([^)]*\)", "", name)).strip()}
    for each in list(found):
        if ", " in each:
            head, _, tail = each.partition(", ")
            found.add(f"{tail} {head}")
    for each in list(found):
        found.add(each.removeprefix("the "))
        if each.startswith("saint "):
            found.update({"st " + each[6:], "st. " + each[6:]})
    return {each.strip() for each in found if len(each.strip()) > 2 or each in {"uk", "us"}}


@cache
def countries() -> Countries:
    known = {country.alpha_2 for country in pycountry.countries}
    names: defaultdict[str, set[str]] = defaultdict(set)
    adjectives: defaultdict[str, set[str]] = defaultdict(set)
    for country in pycountry.countries:
        for attribute in ("name", "common_name", "official_name"):
            if value := getattr(country, attribute, None):
                for variant in _variants(value):
                    names[variant].add(country.alpha_2)
    for info in all_countries():
        code = info.iso(2)
        if code not in known:  # entries for countries that no longer exist (Serbia and Montenegro)
            continue
        for variant in _variants(info.name()):
            names[variant].add(code)
        for demonym in re.split(r"[,/]", info.demonym() or ""):
            if demonym.strip():
                adjectives[plain(demonym.strip())].add(code)
    for code, extra in _EXTRA_NAMES.items():
        for name in extra:
            names[name].add(code)
    for code, extra in _EXTRA_ADJECTIVES.items():
        for adjective in extra:
            adjectives[adjective].add(code)
    everything: defaultdict[str, set[str]] = defaultdict(set)
    for alias, found in [*names.items(), *adjectives.items()]:
        everything[alias] |= found
    codes: dict[str, str] = {}
    ambiguous: dict[str, str] = dict(_AMBIGUOUS)
    for alias, found in everything.items():
        if alias in _AMBIGUOUS:
            continue
        if alias in _HOME:
            codes[alias] = _HOME[alias]
        elif len(found) == 1:
            codes[alias] = next(iter(found))
        else:
            ambiguous[alias] = f"“{alias}” could mean {' or '.join(sorted(_name(code) for code in found))}."
    return Countries(codes, ambiguous, frozenset(a for a in adjectives if a in codes))

def _name(code: str) -> str:
    """The country's common name, "Congo, The Democratic Republic of the" read as "The Democratic
    Republic of the Congo"."""
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code
    name: str = getattr(country, "common_name", None) or country.name
    head, comma, tail = name.partition(", ")
    return f"{tail} {head}" if comma else name
