"""Names and numbers as cross-script evidence that two articles report the same thing.

A name written in Bengali, Arabic or Latin script is transliterated to ASCII
(``anyascii``: ট্রাম্প -> tramp, ترمب -> trmb) and reduced to a consonant
skeleton, so the spellings of one name in different scripts meet (all three of
Trump's give ``trmp``). Numbers in any digits become ASCII digits. Evidence is
what two articles share of these keys; it is weak alone (common words leak
in) and is used beside the embedding scores, never instead of them.
"""

import re
from typing import FrozenSet, Iterable, List, Set

from anyascii import anyascii

from common.text import tokens

# Letters that transliterations of one name swap between scripts (Arabic has
# no p or v, Bengali writes z as j, and so on) fall into one class each.
_CONSONANT_CLASS = str.maketrans({
    "p": "b", "v": "b", "f": "b", "w": "b",
    "z": "j", "g": "j",
    "q": "k", "c": "k", "x": "k",
    "d": "t",
})
_VOWELS = re.compile(r"[aeiouyh]+")
_DIGITS = re.compile(r"\d+")
# Skeletons shorter than this are too common to be evidence (a two-consonant
# skeleton matches hundreds of short words).
MIN_SKELETON = 3
# What ties two different reports to one event must be rarer still: a name
# of four or more consonants, a number of two or more digits (single digits
# are everywhere).
MIN_SPECIFIC_SKELETON = 4
MIN_SPECIFIC_DIGITS = 2


def skeleton(word: str) -> str:
    """The ASCII consonant skeleton of a word in any script."""
    ascii_word = anyascii(word).lower()
    consonants = _VOWELS.sub("", re.sub(r"[^a-z]", "", ascii_word))
    squeezed = re.sub(r"(.)\1+", r"\1", consonants.translate(_CONSONANT_CLASS))
    return squeezed


def evidence_keys(text: str, min_length: int = 4) -> FrozenSet[str]:
    """Numbers (``#2025``) and skeletons of long words (``@trmb``) of a text.

    Only words of at least ``min_length`` letters count, which keeps most
    function words out in every script.
    """
    keys: Set[str] = set()
    for word in tokens(text):
        ascii_word = anyascii(word)
        for number in _DIGITS.findall(ascii_word):
            keys.add(f"#{int(number)}")
        if len(word) >= min_length and not ascii_word.isdigit():
            shape = skeleton(word)
            if len(shape) >= MIN_SKELETON:
                keys.add(f"@{shape}")
    return frozenset(keys)


def specific_evidence(keys: Iterable[str]) -> List[str]:
    """The keys (of ``evidence_keys``) specific enough to tie two reports to one
    event, sorted: long name skeletons and numbers of several digits."""
    return sorted(key for key in keys
                  if len(key) - 1 >= (MIN_SPECIFIC_DIGITS if key.startswith("#")
                                      else MIN_SPECIFIC_SKELETON))
