"""Parse YAML documents into pydantic models with errors that name the file and every invalid field."""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def describe(error: Any, kind: str) -> str:
    """``field 'a.b': message``; model-level checks put the field name first in their message."""
    loc = ".".join(str(p) for p in error["loc"])
    msg = str(error["msg"]).removeprefix("Value error, ")
    if not loc and ": " in msg:
        loc, msg = msg.split(": ", 1)
    return f"field '{loc or kind}': {msg}"


def parse_yaml_model(text: str, where: str, model: type[Model], error: type[Exception], kind: str) -> Model:
    """Validate ``text`` as a ``model``; raises ``error`` naming ``where`` and each invalid field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{where}: expected a mapping of {kind} fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(describe(e, kind) for e in exc.errors())
        raise error(f"{where}: invalid {kind}: {problems}") from exc
