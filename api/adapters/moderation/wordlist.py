"""The local content check: a word list matched with Aho–Corasick (``pyahocorasick``).

``WordListCheck`` finds every listed word in a text in one pass over it, whatever the number
of words (an automaton built once, at start-up). Texts and words are compared in a
normal form (``normalize``): Unicode NFKC (full-width letters, compatibility forms), case
folding, and nothing but letters and digits kept — spaces, punctuation, symbols, emoji and
combining marks between characters do not hide a word (``f.u.c.k``, ``傻 逼``, ``ＦＵＣＫ``).

The list is a UTF-8 file (``LIUDONG_MODERATION_WORDLIST``; a small built-in one,
``wordlist.txt`` beside this module, for development): one ``WORD[|VERDICT[|LABEL]]`` per
line, VERDICT ``reject`` (default) or ``review``, LABEL default ``abuse``; ``#`` comments.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import cast
from uuid import UUID

import ahocorasick

from domain.moderation import PASS, Scene, Suggestion, Verdict

__all__ = ["DEFAULT_WORDLIST", "WordEntry", "WordListCheck", "WordListError", "normalize"]

log = logging.getLogger(__name__)

DEFAULT_WORDLIST = "wordlist.txt"
_NOT_A_WORD_CHARACTER = re.compile(r"[\W_]+")  # \w: letters and digits of every script


def normalize(text: str) -> str:
    """NFKC, case-folded, letters and digits only.

    The non-word characters go first: what is left (Chinese text without its full-width
    punctuation, say) is usually NFKC already, which Python checks without normalising."""
    kept = _NOT_A_WORD_CHARACTER.sub("", text)
    if not unicodedata.is_normalized("NFKC", kept):  # e.g. full-width letters, ligatures
        kept = _NOT_A_WORD_CHARACTER.sub("", unicodedata.normalize("NFKC", kept))
    return kept.casefold()


class WordListError(ValueError):
    """The word list file cannot be read or has an unusable line (the message says where)."""


@dataclass(frozen=True)
class WordEntry:
    word: str
    suggest: Suggestion = "reject"
    label: str = "abuse"


def parse_wordlist(lines: Iterable[str], source: str = "word list") -> list[WordEntry]:
    entries: list[WordEntry] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) > 3 or not parts[0]:
            raise WordListError(f"{source}:{number}: expected WORD[|VERDICT[|LABEL]]")
        suggest = parts[1] if len(parts) > 1 and parts[1] else "reject"
        if suggest not in ("reject", "review"):
            raise WordListError(f"{source}:{number}: verdict {suggest!r} is not reject/review")
        label = parts[2] if len(parts) > 2 and parts[2] else "abuse"
        entries.append(WordEntry(parts[0], cast(Suggestion, suggest), label))
    return entries


class WordListCheck:
    """``ContentCheck`` over a word list (see the module docstring). ``check`` costs one
    NFKC + regex pass and one automaton pass per text: microseconds (``bench`` scenario
    ``moderation``)."""

    name = "local"

    def __init__(self, entries: Iterable[WordEntry]) -> None:
        self._automaton = ahocorasick.Automaton()
        self.size = 0
        for entry in entries:
            key = normalize(entry.word)
            if not key:
                log.warning("moderation: word list entry %r has no letters; ignored", entry.word)
                continue
            previous = self._automaton.get(key, None)
            verdict = Verdict(entry.suggest, entry.label)
            if previous is None or verdict.severity > previous.severity:
                self._automaton.add_word(key, verdict)
            if previous is None:
                self.size += 1
        if self.size:
            self._automaton.make_automaton()

    @classmethod
    def from_file(cls, path: Path | None = None) -> WordListCheck:
        """From ``path``, or the built-in list when ``None``. Raises ``WordListError``."""
        try:
            if path is None:
                text = resources.files(__package__).joinpath(DEFAULT_WORDLIST).read_text("utf-8")
                source = f"built-in {DEFAULT_WORDLIST}"
            else:
                text = Path(path).read_text("utf-8")
                source = str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise WordListError(f"cannot read the word list {path}: {exc}") from exc
        check = cls(parse_wordlist(text.splitlines(), source))
        log.info("moderation: %d words from %s", check.size, source)
        return check

    def verdict(self, text: str) -> Verdict:
        """The verdict of one text: the most severe of the words it contains."""
        if not self.size or not text:
            return PASS
        found = PASS
        for _end, verdict in self._automaton.iter(normalize(text)):
            if verdict.severity > found.severity:
                found = verdict
                if found.suggest == "reject":
                    break
        return found

    def check(self, texts: Sequence[str], scene: Scene, author: UUID) -> list[Verdict]:
        return [self.verdict(text) for text in texts]
