"""Subscribe-message templates: the shipped example is valid, mistakes are refused at start-up
with the entry named, and values are fitted to WeChat's rules (the subscribeMessage.send
page's table)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api.adapters.subscribe import RenderError, TemplateConfigError, Templates, fit

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "subscribe-templates.example.toml"

ITEM: dict[str, Any] = {
    "seq": 7,
    "kind": "loan.requested",
    "at": datetime(2026, 12, 7, 16, 5, tzinfo=UTC),
    "data": {
        "loan_id": "0b0e7c52",
        "book": {"id": "b1", "title": "百年孤独"},
        "borrower": {"id": "r1", "nickname": "小明"},
        "lender": {"id": "r2", "nickname": "Ada"},
        "note": "",
    },
}


def one(data: dict[str, str], kind: str = "loan.requested", page: str = "") -> Templates:
    entry: dict[str, Any] = {"kind": kind, "template_id": "T1", "data": data}
    if page:
        entry["page"] = page
    return Templates.from_dict({"template": [entry]})


def test_the_example_file_is_valid_and_covers_the_four_kinds() -> None:
    templates = Templates.from_file(EXAMPLE)
    assert templates.kinds == {
        "loan.requested",
        "loan.approved",
        "loan.declined",
        "loan.returning",
    }
    assert templates.kinds_of("LOAN_RESULT_TEMPLATE_ID") == ["loan.approved", "loan.declined"]
    page, data = templates.by_kind["loan.requested"].render(ITEM)
    assert page == "pages/loan/detail?id=0b0e7c52"
    assert data == {
        "thing1": {"value": "百年孤独"},
        "name2": {"value": "小明"},
        "time3": {"value": "2026年12月8日 00:05"},  # Beijing time (UTC+8)
        "thing4": {"value": "想借这本书"},  # the fallback of an empty note
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "at least one"),
        (
            {"template": [{"kind": "loan.lost", "template_id": "T", "data": {"thing1": "x"}}]},
            "kind",
        ),
        (
            {"template": [{"kind": "loan.approved", "template_id": "T", "data": {"title": "x"}}]},
            "title",
        ),
        ({"template": [{"kind": "loan.approved", "template_id": "T", "data": {}}]}, "data"),
        (
            {
                "template": [
                    {"kind": "loan.approved", "template_id": "a b", "data": {"thing1": "x"}}
                ]
            },
            "template_id",
        ),
        (
            {"template": [{"kind": "loan.approved", "template_id": "T", "data": {"thing1": "{a"}}]},
            "placeholder",
        ),
        (
            {
                "template": [
                    {"kind": "loan.approved", "template_id": "T", "data": {"phrase1": "OK"}}
                ]
            },
            "phrase",
        ),
        (
            {
                "template": [
                    {
                        "kind": "loan.approved",
                        "template_id": "T",
                        "page": "/p",
                        "data": {"thing1": "x"},
                    }
                ]
            },
            "page",
        ),
        ({"miniprogram_state": "beta", "template": []}, "miniprogram_state"),
        ({"templates": []}, "unknown keys"),
    ],
)
def test_mistakes_are_refused_naming_the_entry(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateConfigError, match=message):
        Templates.from_dict(raw, source="t.toml")


def test_twice_the_same_kind_is_refused() -> None:
    entry = {"kind": "loan.approved", "template_id": "T", "data": {"thing1": "x"}}
    with pytest.raises(TemplateConfigError, match="twice"):
        Templates.from_dict({"template": [entry, entry]})


def test_an_unreadable_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(TemplateConfigError, match="LIUDONG_SUBSCRIBE_TEMPLATES"):
        Templates.from_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("template = [")
    with pytest.raises(TemplateConfigError, match="bad.toml"):
        Templates.from_file(bad)


@pytest.mark.parametrize(
    ("rule", "value", "fitted"),
    [
        (
            "thing",
            "一二三四五六七八九十一二三四五六七八九十",
            "一二三四五六七八九十一二三四五六七八九十",
        ),
        (
            "thing",
            "一二三四五六七八九十一二三四五六七八九十一",
            "一二三四五六七八九十一二三四五六七八九…",
        ),
        ("thing", "第一行\n第二行", "第一行 第二行"),
        ("name", "欧阳娜娜娜娜娜娜娜娜娜", "欧阳娜娜娜娜娜娜娜…"),
        ("name", "Alexander Hamilton Jr.", "Alexander Hamilton …"),
        ("phrase", "已同意 OK", "已同意"),
        ("phrase", "一二三四五六", "一二三四五"),
        ("character_string", "订单 AB-12", "AB-12"),
        ("character_string", "x" * 40, "x" * 32),
        ("number", "共 12.5 本", "12.5"),
        ("letter", "ab1c", "abc"),
        ("symbol", "a!?#$%^", "!?#$%"),
        ("phone_number", "电话 +86-0766-66888866", "+86-0766-66888866"),
        ("car_number", "粤A 8Z888挂", "粤A8Z888挂"),
        ("time", "15:01", "15:01"),
    ],
)
def test_values_are_fitted_to_wechats_rules(rule: str, value: str, fitted: str) -> None:
    assert fit(rule, value) == fitted


def test_placeholders_fallbacks_and_dates() -> None:
    templates = one(
        {
            "thing1": "{book.title}《{missing|无}》",
            "date2": "{at}",
            "character_string3": "{seq}",
            "name4": "{lender.nickname}",
        },
        page="pages/x?k={kind}&who={lender.nickname}&t={book.title}",
    )
    page, data = templates.by_kind["loan.requested"].render(ITEM)
    assert page == "pages/x?k=loan.requested&who=Ada&t=%E7%99%BE%E5%B9%B4%E5%AD%A4%E7%8B%AC"
    assert {k: v["value"] for k, v in data.items()} == {
        "thing1": "百年孤独《无》",
        "date2": "2026年12月8日",
        "character_string3": "7",
        "name4": "Ada",
    }


def test_an_empty_value_is_a_render_error() -> None:
    templates = one({"thing1": "{note}"})
    with pytest.raises(RenderError, match="thing1"):
        templates.by_kind["loan.requested"].render(ITEM)
