"""Writes the values table of charts/tokenworks/README.md from values.yaml (defaults) and values.schema.json
(types and descriptions), and fails when a value is undocumented or the README is stale.

    python scripts/chart_readme.py           # rewrite the table
    python scripts/chart_readme.py --check   # exit 1 if the README is not what it would write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "tokenworks"
START, END = "<!-- values:start (scripts/chart_readme.py) -->", "<!-- values:end -->"


class UndocumentedValueError(ValueError):
    """A key of values.yaml the schema does not describe, or a schema key values.yaml lacks."""


def _is_section(node: dict[str, Any]) -> bool:
    # An object of the chart's own keys gets a row per key; a Kubernetes object or a map is one row.
    children = node.get("properties") or {}
    return node.get("type") == "object" and bool(children) and all("type" in c for c in children.values())


def rows(schema: dict[str, Any], values: Any, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every documented value, in values.yaml's order."""
    if not isinstance(values, dict):
        raise UndocumentedValueError(f"{prefix or 'values'}: the schema describes an object, values.yaml has "
                                     f"{values!r}")
    properties = schema.get("properties") or {}
    unknown = [k for k in values if k not in properties]
    missing = [k for k in properties if k not in values]
    if unknown or missing:
        raise UndocumentedValueError(f"{prefix or 'top level'}: in values.yaml, not in the schema: {unknown}; in the "
                                     f"schema, not in values.yaml (every value needs a default there): {missing}")
    out = []
    for key, value in values.items():
        node = properties[key]
        path = f"{prefix}{key}"
        if _is_section(node):
            out += rows(node, value, f"{path}.")
            continue
        description = " ".join(str(node.get("description", "")).split())
        if not description:
            raise UndocumentedValueError(f"{path}: no description in values.schema.json")
        kind = node.get("type", "object")
        if "enum" in node:
            kind += " (" + ", ".join(f"`{v}`" for v in node["enum"]) + ")"
        out.append((path, kind, json.dumps(value), description))
    return out


def table(chart: Path = CHART) -> str:
    schema = json.loads((chart / "values.schema.json").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for key, kind, default, description in rows(schema, values):
        cells = [f"`{key}`", kind, f"`{default}`", description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def render(readme: str, chart: Path = CHART) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"the README needs the markers {START} and {END} around the values table")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(chart)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    parser.add_argument("--chart", type=Path, default=CHART)
    parser.add_argument("--readme", type=Path, default=None, help="default: the chart's README.md")
    args = parser.parse_args(argv)
    readme: Path = args.readme or args.chart / "README.md"
    try:
        wanted = render(readme.read_text(), args.chart)
    except (UndocumentedValueError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.check:
        if readme.read_text() != wanted:
            print(f"{readme} is stale: run `python scripts/chart_readme.py`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(wanted)
    print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
