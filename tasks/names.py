"""Names the platform puts into store keys, checked once where they come in.

Dataset, model, source and scorer names become folders of keys (``datasets/<name>/<version>/``,
``raw/<source>/``), and request ids file names (``ledger/deletions/<request_id>.json``). A name with a ``/``
would land in another folder (and out of lineage's sight), one with ``..`` outside the store. So every such name
matches one pattern, and a request id the format ``requests.submit`` gives. The CLI options, the configs and the
task entry points that take a name call these checks; ``tasks.storage`` refuses any key that would leave the root
behind them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tasks.errors import Fatal

# 100 characters leave room for names derived from others ("<dataset>-classifier"); files may have 255
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"
REQUEST_ID = re.compile(r"del-\d{8}T\d{6}-[0-9a-f]{8}")
REQUEST_ID_RULE = "request ids look like del-20261201T234500-1a2b3c4d (see `custody deletions`)"


class InvalidName(Fatal):
    """A name given to the platform cannot be part of a store key; the message names the field and the rule."""


def is_valid_name(value: str) -> bool:
    """True when ``value`` may be used as one folder or file name of a key."""
    return isinstance(value, str) and NAME.fullmatch(value) is not None and ".." not in value


def check_name(field: str, value: str) -> str:
    """``value`` unchanged when it is a valid name.

    Args:
        field: what the user called it (``--name``, ``source``): the error names it.
        value: the name given.

    Raises:
        InvalidName: ``value`` breaks the rule.
    """
    if not is_valid_name(value):
        raise InvalidName(f"{field} {value!r} is not a valid name: {NAME_RULE}")
    return value


def check_names(field: str, values: Iterable[str] | None) -> None:
    """Check every name of an optional list option (``--source a --source b``).

    Raises:
        InvalidName: one of them breaks the rule.
    """
    for value in values or ():
        check_name(field, value)


def check_request_id(value: str) -> str:
    """``value`` unchanged when it has the form of a deletion request id.

    Raises:
        InvalidName: it does not (the message starts like an unknown request's).
    """
    if not isinstance(value, str) or REQUEST_ID.fullmatch(value) is None:
        raise InvalidName(f"no deletion request {value!r}: {REQUEST_ID_RULE}")
    return value


def parse_ref(field: str, ref: str) -> tuple[str, str]:
    """``(name, version)`` of a ``NAME@VERSION`` reference to a dataset or model version, both parts checked.

    Raises:
        InvalidName: no ``@``, or a part breaks the name rule.
    """
    if not isinstance(ref, str) or "@" not in ref:
        raise InvalidName(f"expected {field} as NAME@VERSION, got {ref!r}")
    name, version = ref.split("@", 1)
    return check_name(f"{field} name", name), check_name(f"{field} version", version)
