"""Credentials never leave the process: one masking rule for ``custody doctor``, ``Settings.public_dict`` and logs.

A value is a credential when its key looks like one at any depth of a mapping (``password``, ``aws_secret_access_key``,
``token``, ``key``, ``SecretAccessKey``, ...), when it is the password of a URL (``postgresql://user:pw@host``), when
it follows such a name in text (``password=pw``, ``"token": "pw"``), or when it is a value known to be secret: one
under a credential-like key of ``CUSTODY_STORAGE_OPTIONS`` or of the environment (``AWS_SECRET_ACCESS_KEY``), or a
URL password in the environment. ``SecretFilter`` applies the rule to log records (``flows/logging.yml``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import suppress
from typing import Any

MASK = "***"
# words of a key name that make its value a credential. "key" counts only as the last word (key, api_key,
# account_key): "keys" (a list of names) and "key_prefix" are not credentials. Not "pwd": $PWD is a directory.
SECRET_WORDS = frozenset({"secret", "secrets", "password", "passwd", "passphrase", "token", "credential",
                          "credentials", "auth", "authorization", "session", "apikey", "signature", "cookie"})
MIN_KNOWN = 6  # shorter values are too common in text (a region, "true") to mask wherever they occur
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")  # words of snake_case, SCREAMING_CASE and CamelCase names
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?=@)")  # scheme://user:PW@
_NAMED = re.compile(r"(?P<head>(?P<name>[A-Za-z][A-Za-z0-9_.-]*)[\"']?\s*[:=]\s*[\"']?)"  # name=, "name": , name:
                    r"(?P<value>(?:Bearer |Basic )?[^\s\"',;&}]+)")  # the value, to a quote, space or separator


def is_secret_key(name: object) -> bool:
    """Whether a mapping key (or variable name) names a credential: any word in ``SECRET_WORDS``, or ``key`` last."""
    words = [w.lower() for w in _WORD.findall(str(name))]
    return bool(words) and (words[-1] == "key" or any(w in SECRET_WORDS for w in words)
                            or "connectionstring" in "".join(words))


def _secret_values(value: Any) -> Iterator[str]:
    """Every string (at any depth) of a value that sits under a credential-like key."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _secret_values(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _secret_values(v)
    elif value is not None:
        yield str(value)


def secret_values(mapping: Any) -> Iterator[str]:
    """Values under credential-like keys at any depth of ``mapping``, and passwords of URLs anywhere in it."""
    if isinstance(mapping, dict):
        for k, v in mapping.items():
            yield from _secret_values(v) if is_secret_key(k) else secret_values(v)
    elif isinstance(mapping, list | tuple):
        for v in mapping:
            yield from secret_values(v)
    elif isinstance(mapping, str):
        yield from (m.group("pw") for m in _URL_PASSWORD.finditer(mapping))


def known_secrets(*extra: Any, environ: dict[str, str] | None = None) -> frozenset[str]:
    """Secret values of this process: credential-like variables and URL passwords of the environment, the
    credentials in ``CUSTODY_STORAGE_OPTIONS`` (read raw: a malformed value must not stop the masking), and those
    of each ``extra`` mapping (a ``Settings.storage_options`` that did not come from the environment)."""
    environ = dict(os.environ if environ is None else environ)
    found = set(secret_values(environ)) | {v for mapping in extra for v in secret_values(mapping)}
    with suppress(ValueError):
        found.update(secret_values(json.loads(environ.get("CUSTODY_STORAGE_OPTIONS") or "{}")))
    return frozenset(v for v in found if len(v) >= MIN_KNOWN)


def mask_text(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with known secret values, URL passwords and values after credential-like names replaced by ``***``."""
    for value in sorted(known, key=len, reverse=True):  # longest first: a secret may contain a shorter one
        text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _NAMED.sub(lambda m: m.group("head") + MASK if _named_secret(m.group("name")) else m.group(0), text)


def _named_secret(name: str) -> bool:
    """A credential-like name in free text; a bare ``key`` there is a store key ("key: records/..."), not a secret."""
    return name.lower() != "key" and is_secret_key(name)


def mask(value: Any, known: Iterable[str] | None = None) -> Any:
    """A copy of ``value`` (JSON-like) with credentials masked at any depth; ``known`` defaults to
    :func:`known_secrets` of the current environment."""
    known = known_secrets() if known is None else frozenset(known)
    if isinstance(value, dict):
        return {k: MASK if is_secret_key(k) and v not in (None, "") else mask(v, known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, known) for v in value]
    if isinstance(value, str):
        return mask_text(value, known)
    return value


class SecretFilter(logging.Filter):
    """Masks credentials in every record a handler emits: its message, arguments and traceback text.

    Installed on handlers (``flows/logging.yml``, ``flows/runtime.py``), not loggers, so records of every logger
    that propagates to them are masked. The known secrets are read once, when the filter is made.
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.known = known_secrets()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: the handler's formatter reports it, as logging does
            return True
        masked = mask_text(message, self.known)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text, self.known)
        return True
