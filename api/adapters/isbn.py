"""ISBN validation and normalisation (ISO 2108), on top of the ``isbnlib`` library.

The canonical form used everywhere in Liudong (catalog key, ``GET /v1/isbn/{isbn}``,
``POST /v1/books``) is the **ISBN-13 as 13 ASCII digits**, no hyphens.

Accepted input (what a barcode scanner, a user or a CSV file gives us):

- an ISBN-10 (ten characters, the last may be ``X``/``x`` meaning 10) or an ISBN-13
  (prefix ``978`` or ``979``, the EAN "Bookland" prefixes of ISO 2108);
- separated by hyphens (any Unicode dash) or spaces, e.g. ``978-7-5321-7837-7``;
- full-width digits as typed by a Chinese input method (``９７８…``), folded by NFKC;
- an optional ``ISBN``, ``ISBN-10`` or ``ISBN-13`` label, e.g. ``ISBN 0-306-40615-2``.

Check digits are verified by ``isbnlib`` (ISBN-10: mod 11 weighted 10..1; ISBN-13: mod 10
weighted 1,3,1,3…), never re-implemented here.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import isbnlib  # type: ignore[import-untyped]

__all__ = ["InvalidIsbn", "IsbnProblem", "isbn10_of", "normalize_isbn"]

IsbnProblem = Literal["empty", "characters", "length", "prefix", "checksum", "placeholder"]

_LABEL = re.compile(r"^ISBN(?:-?1[03])?\s*:?\s*", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d]+")
_ISBN10 = re.compile(r"^[0-9]{9}[0-9X]$")
_DIGITS = re.compile(r"^[0-9]+$")
_PLACEHOLDERS = frozenset({"0000000000", "000000000X", "0000000000000"})


class InvalidIsbn(ValueError):
    """The text is not a valid ISBN-10 or ISBN-13.

    ``problem`` says why, for callers that map it to an error code or a rejection reason:
    ``"empty"``, ``"characters"`` (a character other than digits, separators and a final
    ``X`` of an ISBN-10), ``"length"`` (not 10 or 13 digits), ``"prefix"`` (a 13-digit code
    not starting with 978/979, e.g. an ordinary EAN barcode), ``"checksum"`` (wrong check
    digit) or ``"placeholder"`` (all zeros). ``value`` is the text as given."""

    def __init__(self, value: str, problem: IsbnProblem, message: str) -> None:
        super().__init__(message)
        self.value = value
        self.problem: IsbnProblem = problem


def _compact(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw).strip()
    text = _LABEL.sub("", text)
    return _SEPARATORS.sub("", text)


def normalize_isbn(raw: str) -> str:
    """The canonical ISBN-13 (13 ASCII digits) of an ISBN-10 or ISBN-13 written any usual way.

    >>> normalize_isbn("0-306-40615-2")
    '9780306406157'
    >>> normalize_isbn("978-7-5321-7837-7")
    '9787532178377'

    Raises ``InvalidIsbn`` (a ``ValueError``) with a message naming the problem: empty
    input, bad characters, bad length, a 13-digit code without the 978/979 prefix, or a
    wrong check digit (the message gives the expected one)."""
    if not isinstance(raw, str):
        raise InvalidIsbn(repr(raw), "characters", f"ISBN must be text, not {type(raw).__name__}")
    code = _compact(raw)
    if not code:
        raise InvalidIsbn(raw, "empty", "ISBN is empty")
    bad = sorted({c for c in code if not ("0" <= c <= "9" or c in "Xx")})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidIsbn(
            raw,
            "characters",
            f"ISBN {raw!r} contains characters other than digits and separators: {shown}",
        )
    code = code.upper()
    if len(code) not in (10, 13):
        raise InvalidIsbn(
            raw, "length", f"ISBN {raw!r} has {len(code)} characters; an ISBN has 10 or 13"
        )
    if len(code) == 10:
        if not _ISBN10.match(code):
            raise InvalidIsbn(
                raw, "characters", f"ISBN-10 {raw!r}: only the last character may be X"
            )
        if code in _PLACEHOLDERS:
            raise InvalidIsbn(raw, "placeholder", f"ISBN {raw!r} is a placeholder, not an ISBN")
        if not isbnlib.is_isbn10(code):
            expected = isbnlib.check_digit10(code[:9])
            raise InvalidIsbn(
                raw,
                "checksum",
                f"ISBN-10 {raw!r} has a wrong check digit {code[9]!r} (expected {expected!r})",
            )
        isbn13 = str(isbnlib.to_isbn13(code))
    else:
        if not _DIGITS.match(code):
            raise InvalidIsbn(raw, "characters", f"ISBN-13 {raw!r}: X is only valid in an ISBN-10")
        if code[:3] not in ("978", "979"):
            raise InvalidIsbn(
                raw, "prefix", f"{raw!r} is not an ISBN: an ISBN-13 starts with 978 or 979"
            )
        if code in _PLACEHOLDERS:  # pragma: no cover - 000… is caught by the prefix check
            raise InvalidIsbn(raw, "placeholder", f"ISBN {raw!r} is a placeholder, not an ISBN")
        if not isbnlib.is_isbn13(code):
            expected = isbnlib.check_digit13(code[:12])
            raise InvalidIsbn(
                raw,
                "checksum",
                f"ISBN-13 {raw!r} has a wrong check digit {code[12]!r} (expected {expected!r})",
            )
        isbn13 = code
    return isbn13


def isbn10_of(isbn13: str) -> str | None:
    """The ISBN-10 of an ISBN (any form accepted by ``normalize_isbn``), or ``None``.

    Only ``978``-prefixed ISBN-13s have an ISBN-10 (ISO 2108); ``979`` ones return ``None``.
    Raises ``InvalidIsbn`` if ``isbn13`` is not a valid ISBN."""
    canonical = normalize_isbn(isbn13)
    if not canonical.startswith("978"):
        return None
    return str(isbnlib.to_isbn10(canonical)) or None
