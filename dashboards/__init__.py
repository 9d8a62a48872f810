"""Tokenworks' Grafana dashboards: the generated JSON (``dashboards/json/*.json``, written by
``python -m dashboards.build``) and what reads it at run time.

The JSON is standard Grafana dashboard JSON (a ``DS_PROMETHEUS`` data source variable, stable ``uid``, no
``__inputs``), shipped as package data so that a process can run the dashboards' own queries against a live
Prometheus (``dashboards.grafana.interpolate`` substitutes variables as Grafana does). Only the generator
needs ``grafana-foundation-sdk``; reading needs pydantic only.
"""

from __future__ import annotations

from importlib import resources

from dashboards.model import Dashboard

NAMES = ("fleet", "deployment", "operator")


def json_text(name: str) -> str:
    """The committed JSON of dashboard ``name`` (one of ``NAMES``)."""
    if name not in NAMES:
        raise KeyError(f"no dashboard {name!r}; there are {', '.join(NAMES)}")
    return (resources.files("dashboards") / "json" / f"{name}.json").read_text()


def load(name: str) -> Dashboard:
    return Dashboard.model_validate_json(json_text(name))
