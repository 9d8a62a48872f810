"""The part of Grafana's dashboard JSON model that running a dashboard's queries needs: panels and their
targets, template variables, annotations. Unknown fields are kept (Grafana's model is much larger)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class DataSourceRef(_Model):
    type: str | None = None
    uid: str | None = None


class Target(_Model):
    ref_id: str = Field(alias="refId")
    expr: str
    legend_format: str = Field("", alias="legendFormat")
    instant: bool = False
    range: bool = True
    format: str = "time_series"
    datasource: DataSourceRef | None = None

    @property
    def is_instant(self) -> bool:
        """Grafana runs a target as an instant query when ``instant`` is set and ``range`` is not."""
        return self.instant and not self.range


class Panel(_Model):
    id: int
    type: str
    title: str
    description: str = ""
    datasource: DataSourceRef | None = None
    targets: list[Target] = Field(default_factory=list)
    panels: list[Panel] = Field(default_factory=list)  # a collapsed row's panels


class Variable(_Model):
    name: str
    type: str
    label: str | None = None
    query: str | dict[str, object] | None = None
    datasource: DataSourceRef | None = None
    refresh: int | None = None
    multi: bool = False
    include_all: bool = Field(False, alias="includeAll")
    all_value: str | None = Field(None, alias="allValue")
    hide: int = 0

    @property
    def query_text(self) -> str:
        if isinstance(self.query, dict):
            return str(self.query.get("query", ""))
        return self.query or ""


class Annotation(_Model):
    name: str
    datasource: DataSourceRef | None = None
    enable: bool = True
    expr: str | None = None
    step: str | None = None
    title_format: str = Field("", alias="titleFormat")
    text_format: str = Field("", alias="textFormat")
    tag_keys: str = Field("", alias="tagKeys")
    built_in: float | None = Field(None, alias="builtIn")


class Templating(_Model):
    variables: list[Variable] = Field(default_factory=list, alias="list")


class Annotations(_Model):
    queries: list[Annotation] = Field(default_factory=list, alias="list")


class Dashboard(_Model):
    uid: str
    title: str
    schema_version: int = Field(alias="schemaVersion")
    editable: bool = True
    panels: list[Panel] = Field(default_factory=list)
    templating: Templating = Field(default_factory=Templating)
    annotations: Annotations = Field(default_factory=Annotations)

    def all_panels(self) -> list[Panel]:
        """Every panel, rows' nested panels included, rows themselves excluded."""
        out: list[Panel] = []
        for panel in self.panels:
            if panel.type != "row":
                out.append(panel)
            out.extend(panel.panels)
        return out

    def variable(self, name: str) -> Variable:
        return next(v for v in self.templating.variables if v.name == name)
