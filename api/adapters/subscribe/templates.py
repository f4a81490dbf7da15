"""Subscribe-message templates (订阅消息): which inbox kind becomes which template, the page it
opens and how the item's fields fill the template's ``data`` keys — read from a TOML file
(``LIUDONG_SUBSCRIBE_TEMPLATES``), validated once at start-up.

The file (example: ``deploy/subscribe-templates.example.toml``)::

    miniprogram_state = "formal"          # developer | trial | formal (default formal)
    lang = "zh_CN"                        # zh_CN | en_US | zh_HK | zh_TW (default zh_CN)

    [[template]]
    kind = "loan.requested"               # an inbox item kind (projections.inbox.model)
    template_id = "AbCd…"                 # from the mini-program's console (订阅消息)
    page = "pages/loan/detail?id={loan_id}"   # optional; no leading "/"
    [template.data]
    thing1 = "{book.title}"               # {path.in.the.item|fallback}
    name2 = "{borrower.nickname}"
    time3 = "{at}"

A value is text with ``{field}`` placeholders: ``field`` is a dotted path into the item's
``data`` (``book.title``, ``borrower.nickname``, ``note``…) or ``at`` / ``kind`` / ``seq``;
``{field|text}`` gives ``text`` when the field is missing or empty. In ``page`` a filled
value is percent-encoded (it is a query parameter). One kind maps to one
template; one template may serve several kinds.

WeChat's value rules, applied to each filled value by the key's type prefix (``thing1`` is a
``thing``; source: the "订阅消息参数值内容限制说明" table of ``subscribeMessage.send``,
https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-message-management/subscribe-message/sendMessage.html)::

    thing             ≤ 20 characters (any)             cut to 19 + "…"
    number            ≤ 32 digits, may have a decimal   other characters dropped
    letter            ≤ 32 letters                      other characters dropped
    symbol            ≤ 5 symbols
    character_string  ≤ 32 digits, letters, symbols    other characters (CJK…) dropped
    time              24-hour time, may have a date     an ISO 8601 instant → "2019年10月1日 15:01"
    date              a date, may have a time           an ISO 8601 instant → "2019年10月1日"
                                                        (both in Beijing time, UTC+8)
    amount            currency sign + ≤ 10 digits       as given
    phone_number      ≤ 17 digits and symbols           others dropped
    car_number        ≤ 8 characters                    cut
    name              ≤ 10 characters (≤ 20 if letters and symbols only)   cut
    phrase            ≤ 5 Chinese characters            others dropped, cut
    enum              one of the template's values      as given

No value may contain control characters (line breaks are turned into spaces). A value that
ends up empty is refused by WeChat (errcode 47003), so ``render`` raises ``RenderError``
for it (the notifier records that item as failed, without calling WeChat).

Errors: ``TemplateConfigError`` (a ``ValueError``; the message names the file and the entry).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = [
    "KINDS",
    "RULES",
    "RenderError",
    "Template",
    "TemplateConfigError",
    "Templates",
    "fit",
]

KINDS = frozenset(
    {
        "loan.requested",
        "loan.approved",
        "loan.declined",
        "loan.cancelled",
        "loan.returning",
        "loan.returned",
        "chat.message",
    }
)
"""Inbox kinds a subscribe message may be sent for (``projections.inbox.model``; not the
reader's own ``chat.read`` / ``chat.hidden``)."""

RULES = (
    "thing",
    "number",
    "letter",
    "symbol",
    "character_string",
    "time",
    "date",
    "amount",
    "phone_number",
    "car_number",
    "name",
    "phrase",
    "enum",
)
_KEY = re.compile(rf"^({'|'.join(RULES)})([0-9]{{1,2}})$")
_PLACEHOLDER = re.compile(
    r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:\|([^{}]*))?\}"
)
_STATES = ("developer", "trial", "formal")
_LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")
_BEIJING = timezone(timedelta(hours=8))
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class TemplateConfigError(ValueError):
    """The templates file is unreadable or invalid; the message names the file and entry."""


class RenderError(ValueError):
    """A template value came out empty (WeChat would refuse it with 47003)."""


@dataclass(frozen=True)
class Template:
    """One kind's subscribe message: ``data`` maps a key (``thing1``) to its value text."""

    kind: str
    template_id: str
    page: str
    data: Mapping[str, str]

    def render(self, item: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, str]]]:
        """``(page, data)`` for an inbox item ``{"seq", "kind", "at", "data"}``: ``data`` in
        WeChat's shape ``{"thing1": {"value": "…"}}``, each value fitted to its key's rule.
        Raises ``RenderError`` when a value is empty after fitting."""
        page = _PLACEHOLDER.sub(
            lambda m: quote(_lookup(item, m.group(1), m.group(2) or ""), safe=""), self.page
        )
        data: dict[str, dict[str, str]] = {}
        for key, text in self.data.items():
            rule = _KEY.match(key).group(1)  # type: ignore[union-attr] # checked on load

            def filled(m: re.Match[str], rule: str = rule) -> str:
                return _lookup(item, m.group(1), m.group(2) or "", rule)

            raw = _PLACEHOLDER.sub(filled, text)
            value = fit(rule, raw)
            if not value:
                raise RenderError(f"{self.kind}: {key} is empty for this item ({text!r})")
            data[key] = {"value": value}
        return page, data


@dataclass(frozen=True)
class Templates:
    """The validated file: one ``Template`` per kind, and the send options."""

    by_kind: Mapping[str, Template] = field(default_factory=dict)
    miniprogram_state: str = "formal"
    lang: str = "zh_CN"
    source: str = ""

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.by_kind)

    @property
    def template_ids(self) -> frozenset[str]:
        return frozenset(t.template_id for t in self.by_kind.values())

    def kinds_of(self, template_id: str) -> list[str]:
        return sorted(k for k, t in self.by_kind.items() if t.template_id == template_id)

    @classmethod
    def from_file(cls, path: Path | str) -> Templates:
        """Read and validate ``path``. Raises ``TemplateConfigError``."""
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise TemplateConfigError(f"LIUDONG_SUBSCRIBE_TEMPLATES {path}: {exc}") from exc
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "<dict>") -> Templates:
        """Validate the decoded TOML. Raises ``TemplateConfigError``."""

        def fail(where: str, why: str) -> TemplateConfigError:
            return TemplateConfigError(f"LIUDONG_SUBSCRIBE_TEMPLATES {source}: {where}: {why}")

        unknown = set(raw) - {"miniprogram_state", "lang", "template"}
        if unknown:
            raise fail("top level", f"unknown keys {sorted(unknown)}")
        state = raw.get("miniprogram_state", "formal")
        if state not in _STATES:
            raise fail("miniprogram_state", f"{state!r} is not one of {list(_STATES)}")
        lang = raw.get("lang", "zh_CN")
        if lang not in _LANGS:
            raise fail("lang", f"{lang!r} is not one of {list(_LANGS)}")
        entries = raw.get("template", [])
        if not isinstance(entries, list) or not entries:
            raise fail("template", "needs at least one [[template]] table")
        by_kind: dict[str, Template] = {}
        for number, entry in enumerate(entries, 1):
            where = f"[[template]] #{number}"
            if not isinstance(entry, dict):
                raise fail(where, "is not a table")
            extra = set(entry) - {"kind", "template_id", "page", "data"}
            if extra:
                raise fail(where, f"unknown keys {sorted(extra)}")
            kind = entry.get("kind")
            if kind not in KINDS:
                raise fail(where, f"kind {kind!r} is not one of {sorted(KINDS)}")
            where = f"[[template]] {kind}"
            if kind in by_kind:
                raise fail(where, "appears twice")
            template_id = entry.get("template_id")
            if not isinstance(template_id, str) or not re.fullmatch(
                r"[A-Za-z0-9_-]{1,128}", template_id
            ):
                raise fail(where, "template_id must be the console's id (letters, digits, - _)")
            page = entry.get("page", "")
            if not isinstance(page, str) or page.startswith("/") or len(page) > 1024:
                raise fail(where, "page must be a mini-program page path without a leading /")
            _check_placeholders(page, lambda why, w=where: fail(w + " page", why))
            data = entry.get("data")
            if not isinstance(data, dict) or not data:
                raise fail(where, "needs a [template.data] table with at least one key")
            for key, text in data.items():
                if not _KEY.match(key):
                    raise fail(where, f"data key {key!r} is not a WeChat key like thing1, time2")
                if not isinstance(text, str) or not text.strip():
                    raise fail(where, f"data.{key} must be a non-empty string")
                _check_placeholders(text, lambda why, w=f"{where} data.{key}": fail(w, why))
                rule = _KEY.match(key).group(1)  # type: ignore[union-attr]
                if not _PLACEHOLDER.search(text) and not fit(rule, text):
                    raise fail(where, f"data.{key}: {text!r} is empty once fitted to {rule}")
            by_kind[kind] = Template(kind, template_id, page, dict(data))
        return cls(by_kind=by_kind, miniprogram_state=state, lang=lang, source=source)


def _check_placeholders(text: str, fail: Any) -> None:
    stripped = _PLACEHOLDER.sub("", text)
    if "{" in stripped or "}" in stripped:
        raise fail("a placeholder is not {field} or {field|fallback}")


def _lookup(item: Mapping[str, Any], path: str, fallback: str, rule: str = "") -> str:
    value: Any
    if path in ("at", "kind", "seq"):
        value = item.get(path)
    else:
        value = item.get("data") or {}
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if value is None or value == "":
        return fallback
    if isinstance(value, datetime):
        return _when(value, rule)
    if isinstance(value, str) and rule in ("time", "date"):
        try:
            return _when(datetime.fromisoformat(value), rule)
        except ValueError:
            return value
    return str(value)


def _when(value: datetime, rule: str) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(_BEIJING)
    day = f"{local.year}年{local.month}月{local.day}日"
    return day if rule == "date" else f"{day} {local:%H:%M}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _keep(text: str, allowed: str) -> str:
    return "".join(re.findall(allowed, text))


def fit(rule: str, value: str) -> str:
    """``value`` fitted to WeChat's rule for a key of type ``rule`` (``thing``, ``name``…;
    see the module docstring). Unknown rules raise ``KeyError``."""
    text = " ".join(_CONTROL.sub(" ", value).split())
    if rule == "thing":
        return _cut(text, 20)
    if rule == "number":
        match = re.search(r"-?[0-9]+(?:\.[0-9]+)?", text)
        return match.group(0)[:32] if match else ""
    if rule == "letter":
        return _keep(text, r"[A-Za-z]")[:32]
    if rule == "symbol":
        return _keep(text, r"[^\w\s]")[:5]
    if rule == "character_string":
        return _keep(text, r"[\x21-\x7e]")[:32]
    if rule in ("time", "date", "amount", "enum"):
        return text
    if rule == "phone_number":
        return _keep(text, r"[0-9+\-() ]").strip()[:17]
    if rule == "car_number":
        return text.replace(" ", "")[:8]
    if rule == "name":
        return _cut(text, 10 if _CJK.search(text) else 20)
    if rule == "phrase":
        return "".join(_CJK.findall(text))[:5]
    raise KeyError(rule)
