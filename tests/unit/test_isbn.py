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
