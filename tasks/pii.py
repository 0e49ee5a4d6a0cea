"""Detectors for direct identifiers in text: e-mail, phone, credit card (Luhn), IBAN (mod-97), IP address.

Candidates are found by pattern and then validated (phonenumbers for phones, python-stdnum for Luhn and
IBAN checksums, ``ipaddress`` for IPs), so a random 16-digit number that fails the checksum is not a card.
``scan`` returns the spans; ``redact`` replaces them with ``[KIND]`` placeholders. ``candidates`` is the
vectorised prefilter: a column-wide Arrow (RE2) pass that flags every row ``scan`` could find anything in, so the
per-row Python work runs on those rows only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from stdnum import iban, luhn

PII_KINDS = ("email", "phone", "credit_card", "iban", "ip_address")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")

# RE2 supersets of the detectors: each is a detector's pattern without lookarounds and at its minimum repetition,
# so it matches wherever the detector does (\p{Nd} is Python's Unicode \d). E-mails and IPs are searched in the
# text as it is; cards, IBANs and phones in the text with URLs blanked, and each of those needs a digit there.
_MAYBE_IN_TEXT = "|".join([
    r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2}",  # _EMAIL
    r"(?:\p{Nd}{1,3}\.){3}\p{Nd}",  # _IPV4
    r"(?:[0-9A-Fa-f]{1,4}:){2}",  # _IPV6
])
# _URL blanking that never blanks more than _URL does: case variants spelt out (Python's IGNORECASE also folds
# the long s), and the URL ends at any character Python's \s matches (RE2's \s is ASCII only).
_URL_RE2 = r"(?:[Hh][Tt][Tt][Pp][Ss]?://|[Ww][Ww][Ww]\.)[^\t\n\x{0b}\f\r\x{1c}-\x{1f}\x{85}\p{Z}]*"


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int


def _valid_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _regex_spans(kind: str, pattern: re.Pattern[str], text: str, valid: Callable[[str], bool]) -> list[Span]:
    return [Span(kind, m.start(), m.end()) for m in pattern.finditer(text) if valid(m.group())]


def scan(text: str, region: str = "US") -> list[Span]:
    """All PII spans in ``text``, non-overlapping, in order (earlier detectors win overlaps)."""
    # digits inside URLs (pin ids, article ids) are not cards, accounts or phones: blank them out, same offsets
    digits_text = _URL.sub(lambda m: " " * len(m.group()), text)
    found = _regex_spans("email", _EMAIL, text, lambda s: True)
    found += _regex_spans("credit_card", _CARD, digits_text, lambda s: luhn.is_valid(re.sub(r"\D", "", s)))
    found += _regex_spans("iban", _IBAN, digits_text, iban.is_valid)
    found += _regex_spans("ip_address", _IPV4, text, _valid_ip)
    found += _regex_spans("ip_address", _IPV6, text, _valid_ip)
    if any(c.isdigit() for c in text):
        found += [Span("phone", m.start, m.end) for m in
                  phonenumbers.PhoneNumberMatcher(digits_text, region, leniency=phonenumbers.Leniency.VALID)]
    kept: list[Span] = []
    for span in sorted(found, key=lambda s: (s.start, -s.end)):
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept


def candidates(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """True where ``scan`` may find a span (never False where it finds one); False for null texts."""
    in_text = pc.match_substring_regex(texts, _MAYBE_IN_TEXT)
    digit_outside_urls = pc.match_substring_regex(pc.replace_substring_regex(texts, _URL_RE2, " "), r"\p{Nd}")
    return pc.fill_null(pc.or_(in_text, digit_outside_urls), False)


def redact(text: str, spans: list[Span], kinds: set[str]) -> str:
    """``text`` with the spans of ``kinds`` replaced by ``[KIND]``."""
    out, last = [], 0
    for span in spans:
        if span.kind in kinds:
            out += [text[last:span.start], f"[{span.kind.upper()}]"]
            last = span.end
    out.append(text[last:])
    return "".join(out)
