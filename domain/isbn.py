"""What an ISBN's registration group says about a book's language (ISO 2108).

The one place this rule lives: the Library's ``Book.Published`` events record it, and the
ISBN catalog import infers a language from it when a CSV gives none. Validation and
ISBN-10/13 conversion stay in ``api.adapters.isbn`` (on the ``isbnlib`` library); this module
needs only the prefix, so the domain keeps to the standard library.

Source: the International ISBN Agency's "ISBN Ranges" (RangeMessage.xml), registration groups
whose publications are, by the agency's own label, one language: ``978-0``/``978-1`` English
language, ``978-2``/``979-10`` French language, ``978-3`` German language, ``978-4`` Japan,
``978-7`` China (People's Republic), ``978-957``/``978-986`` Taiwan, ``978-962``/``978-988``
Hong Kong, ``978-99937``/``978-99965`` Macau, ``978-89``/``979-11`` Korea (Republic). Other
groups (Spain, India, Switzerland…) publish in several languages: no guess.
"""

from __future__ import annotations

# EAN prefix + registration group → ISO 639-1 code. Groups are prefix-free within their
# EAN prefix (ISO 2108), so "longest matching prefix" is simply "the matching prefix".
LANGUAGE_OF_GROUP: dict[str, str] = {
    "9780": "en",
    "9781": "en",
    "9782": "fr",
    "97910": "fr",
    "9783": "de",
    "9784": "ja",
    "9787": "zh",
    "978957": "zh",
    "978986": "zh",
    "978962": "zh",
    "978988": "zh",
    "97899937": "zh",
    "97899965": "zh",
    "97889": "ko",
    "97911": "ko",
}


def language_of_isbn(isbn: str) -> str:
    """The ISO 639-1 code the ISBN's registration group implies (``"zh"``, ``"en"``, ``"ja"``,
    ``"ko"``, ``"fr"``, ``"de"``), or ``""`` when the group is not one language.

    ``isbn`` is an ISBN-10 or ISBN-13 in any usual spelling (hyphens and spaces ignored; an
    ISBN-10 is the ``978`` form without its prefix). Never raises: malformed input gives
    ``""``."""
    digits = "".join(ch for ch in isbn if ch.isdigit() or ch in "Xx")
    if len(digits) == 10:  # noqa: PLR2004 - an ISBN-10 is the 978 form without the prefix
        digits = "978" + digits
    if len(digits) != 13:  # noqa: PLR2004
        return ""
    for length in (8, 6, 5, 4):
        language = LANGUAGE_OF_GROUP.get(digits[:length])
        if language:
            return language
    return ""
