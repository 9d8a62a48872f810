"""What every API model shares: camelCase on the wire, unknown fields refused, CEL rules spelled one way."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict


def rule(expression: str, message: str | None = None, *, message_expression: str | None = None,
         reason: str | None = None, field_path: str | None = None) -> JsonDict:
    """One CEL ``x-kubernetes-validations`` entry."""
    entry: JsonDict = {"rule": expression}
    if message:
        entry["message"] = message
    if message_expression:
        entry["messageExpression"] = message_expression
    if reason:
        entry["reason"] = reason
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors, as in the CRD."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )
