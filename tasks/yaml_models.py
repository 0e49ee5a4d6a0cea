"""Parse YAML documents into pydantic models with errors that name the file and every invalid field.

Datasheets arrive with the data, so their YAML is hostile input: before PyYAML builds anything (its composer
recurses, and aliases share nodes that a consumer would expand), the event stream is checked for size, nesting
and the number of nodes the aliases expand to ("billion laughs").
"""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
MAX_YAML_CHARS = 1 << 20  # a datasheet or policy is a page of text, not a megabyte
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000  # nodes once every alias is expanded


def describe(error: Any, kind: str) -> str:
    """``field 'a.b': message``; model-level checks put the field name first in their message."""
    loc = ".".join(str(p) for p in error["loc"])
    msg = str(error["msg"]).removeprefix("Value error, ")
    if not loc and ": " in msg:
        loc, msg = msg.split(": ", 1)
    return f"field '{loc or kind}': {msg}"


def check_shape(text: str) -> None:
    """Refuse YAML too long, too deep, or whose aliases expand past ``MAX_YAML_NODES`` nodes.

    Raises:
        ValueError: naming the limit passed.
        yaml.YAMLError: the text does not parse.
    """
    if len(text) > MAX_YAML_CHARS:
        raise ValueError(f"{len(text)} characters > {MAX_YAML_CHARS}")
    sizes: dict[str, int] = {}  # anchor -> nodes under it, aliases expanded
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, nodes so far) of each open collection
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((event.anchor, 0))
            if len(open_nodes) > MAX_YAML_DEPTH:
                raise ValueError(f"nested deeper than {MAX_YAML_DEPTH} levels")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_nodes.pop()
            size += 1
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
            total += 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, sizes.get(event.anchor, 1)  # an alias of an open collection is a cycle: 1
            total += size
        else:
            continue
        if anchor:
            sizes[anchor] = size
        if open_nodes:
            open_nodes[-1] = (open_nodes[-1][0], open_nodes[-1][1] + size)
        if total > MAX_YAML_NODES:
            raise ValueError(f"aliases expand to more than {MAX_YAML_NODES} nodes")


def parse_yaml_model(text: str, where: str, model: type[Model], error: type[Exception], kind: str) -> Model:
    """Validate ``text`` as a ``model``; raises ``error`` naming ``where`` and each invalid field."""
    try:
        check_shape(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML: {exc}") from exc
    except ValueError as exc:  # our limits, or an integer of more digits than Python converts
        raise error(f"{where}: refused YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{where}: expected a mapping of {kind} fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(describe(e, kind) for e in exc.errors())
        raise error(f"{where}: invalid {kind}: {problems}") from exc
