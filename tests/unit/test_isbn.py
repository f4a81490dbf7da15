import pytest

from api.adapters.isbn import InvalidIsbn, isbn10_of, normalize_isbn


@pytest.mark.parametrize(
    ("raw", "isbn13"),
    [
        ("0306406152", "9780306406157"),  # ISBN-10
        ("0-306-40615-2", "9780306406157"),  # hyphens
        ("0 306 40615 2", "9780306406157"),  # spaces
        ("080442957X", "9780804429573"),  # X check digit
        ("0-8044-2957-x", "9780804429573"),  # lower-case x
        ("9780306406157", "9780306406157"),  # ISBN-13
        ("978-0-306-40615-7", "9780306406157"),
        (" 978 7 5321 7837 7 ", "9787532178377"),  # a Chinese ISBN, padded
        ("978–7–5321–7837–7", "9787532178377"),  # en dashes
        ("９７８７５３２１７８３７７", "9787532178377"),  # full-width digits (Chinese IME)
        ("ISBN 0-306-40615-2", "9780306406157"),
        ("ISBN-13: 978-0-306-40615-7", "9780306406157"),
        ("979-10-90636-07-1", "9791090636071"),  # 979 prefix
    ],
)
def test_valid_isbns_normalise_to_isbn13(raw: str, isbn13: str) -> None:
    assert normalize_isbn(raw) == isbn13


@pytest.mark.parametrize(
    ("raw", "problem", "words"),
    [
        ("0306406153", "checksum", "expected '2'"),
        ("0-8044-2957-0", "checksum", "expected 'X'"),
        ("9780306406158", "checksum", "expected '7'"),
        ("978030640615", "length", "12 characters"),
        ("03064061", "length", "8 characters"),
        ("97803064061577", "length", "14 characters"),
        ("abcdefghij", "characters", "'a'"),
        ("978030640615O", "characters", "'O'"),  # letter O, not zero
        ("03064X6152", "characters", "last character"),
        ("978030640615X", "characters", "only valid in an ISBN-10"),
        ("0306406152;", "characters", "';'"),
        ("4901234567894", "prefix", "978 or 979"),  # an ordinary EAN-13
        ("0000000000", "placeholder", "placeholder"),
        ("", "empty", "empty"),
        ("  - ", "empty", "empty"),
    ],
)
def test_invalid_isbns_say_why(raw: str, problem: str, words: str) -> None:
    with pytest.raises(InvalidIsbn) as info:
        normalize_isbn(raw)
    assert info.value.problem == problem
    assert words in str(info.value)
    assert info.value.value == raw
    assert isinstance(info.value, ValueError)


def test_non_text_is_rejected() -> None:
    with pytest.raises(InvalidIsbn):
        normalize_isbn(9780306406157)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("isbn", "isbn10"),
    [
        ("9780306406157", "0306406152"),
        ("9780804429573", "080442957X"),
        ("9787532178377", "7532178374"),
        ("0306406152", "0306406152"),
        ("9791090636071", None),  # 979 ISBNs have no ISBN-10
    ],
)
def test_isbn10_of(isbn: str, isbn10: str | None) -> None:
    assert isbn10_of(isbn) == isbn10


def test_isbn10_of_invalid_raises() -> None:
    with pytest.raises(InvalidIsbn):
        isbn10_of("9780306406158")


# --------------------------------------------------------------------------- language


@pytest.mark.parametrize(
    ("isbn", "language"),
    [
        ("978-7-5321-7837-7", "zh"),  # China
        ("7-5321-7837-X", "zh"),  # the same group as an ISBN-10
        ("978-957-000-000-0", "zh"),  # Taiwan
        ("978-962-000-000-0", "zh"),  # Hong Kong: the rule the catalog used, now the domain's
        ("978-99937-0-000-0", "zh"),  # Macau
        ("978-4-00-000000-0", "ja"),
        ("978-89-000-0000-0", "ko"),
        ("979-11-000-0000-0", "ko"),
        ("978-0-306-40615-7", "en"),
        ("978-2-07-000000-0", "fr"),
        ("979-10-000-0000-0", "fr"),
        ("978-3-16-148410-0", "de"),
        ("978-84-000-0000-0", ""),  # Spain: several languages, no guess
        ("979-8-000-00000-0", ""),  # United States 979-8: not labelled one language
        ("", ""),
        ("not an isbn", ""),
    ],
)
def test_language_of_isbn_one_rule(isbn: str, language: str) -> None:
    from domain.isbn import language_of_isbn

    assert language_of_isbn(isbn) == language


def test_catalog_and_domain_share_the_language_rule() -> None:
    """The catalog import and ``Book.Published`` must not disagree (they once did)."""
    from api.adapters.catalog import importer as catalog
    from domain import book, library
    from domain.isbn import language_of_isbn

    assert catalog.language_of_isbn is language_of_isbn
    assert library.language_of_isbn is language_of_isbn
    assert book.language_of_isbn is language_of_isbn
    assert not hasattr(catalog, "_LANGUAGE_OF_GROUP") and not hasattr(catalog, "isbnlib")


# --------------------------------------------------------------------------- instants


def test_parse_instant_one_rule_for_naive_times() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from domain.instants import InvalidInstant, parse_instant

    assert parse_instant("2026-12-07T08:30:00Z") == datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
    assert parse_instant(" 2026-12-07 16:30+08:00 ") == datetime(
        2026, 12, 7, 16, 30, tzinfo=timezone(timedelta(hours=8))
    )
    for naive in ("2026-12-07T08:30:00", "2026-12-07"):
        with pytest.raises(InvalidInstant, match="no timezone"):
            parse_instant(naive)
    with pytest.raises(InvalidInstant, match="not an ISO 8601 time"):
        parse_instant("yesterday")
