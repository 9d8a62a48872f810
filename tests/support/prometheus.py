"""A real Prometheus server for tests, scraping the targets of each job from its own file_sd JSON file,
optionally evaluating rule files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.controlplane import Component, binary, free_port


class PrometheusServer:
    def __init__(self, workdir: Path, scrape_interval: str = "1s",
                 jobs: Mapping[str, Mapping[str, Any]] | None = None, rule_files: list[Path] | None = None,
                 rule_query_offset: str | None = None) -> None:
        """``jobs``: job name -> extra scrape config (e.g. ``{"honor_labels": True}``); one job, ``emulators``,
        by default. Each job's targets come from its own file (``set_targets(..., job=...)``)."""
        self.workdir = workdir
        self.port = free_port()
        self.jobs = dict(jobs or {"emulators": {}})
        self.targets_file = workdir / "targets.json"  # the first job's
        self.config_file = workdir / "prometheus.yml"
        self.scrape_interval = scrape_interval
        self.component: Component | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        for job in self.jobs:
            self.set_targets([], job)
        settings: dict[str, str] = {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval}
        if rule_query_offset:
            # Rules evaluate this far in the past, so a scrape still being written when a rule runs is
            # in its input (Prometheus' global rule_query_offset).
            settings["rule_query_offset"] = rule_query_offset
        self.config_file.write_text(yaml.safe_dump({
            "global": settings,
            "rule_files": [str(path.resolve()) for path in rule_files or []],
            "scrape_configs": [{
                "job_name": job, **extra,
                "file_sd_configs": [{"files": [str(self._targets(job))], "refresh_interval": "1s"}],
            } for job, extra in self.jobs.items()],
        }))

    def _targets(self, job: str) -> Path:
        return self.targets_file if job == next(iter(self.jobs)) else self.workdir / f"targets-{job}.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_targets(self, groups: list[tuple[list[str], dict[str, str]]], job: str | None = None) -> None:
        """Replace a job's scraped targets (the first job's by default): (["host:port", ...], labels)
        groups. Written atomically."""
        path = self._targets(job or next(iter(self.jobs)))
        payload = [{"targets": targets, "labels": labels} for targets, labels in groups]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)

    def start(self) -> PrometheusServer:
        self.component = Component("prometheus", [
            str(binary("prometheus")), f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ], self.workdir / "prometheus.log")
        self.component.start()
        self.component.wait_until(lambda: httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200,
                                  timeout=60, what="ready")
        return self

    def stop(self) -> None:
        if self.component:
            self.component.stop()

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=5).json()
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """The rule groups Prometheus has loaded, as its rules API reports them."""
        groups: list[dict[str, Any]] = httpx.get(f"{self.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        return groups

    def api(self, path: str, params: Mapping[str, Any]) -> Any:
        """``/api/v1/<path>``'s data; AssertionError with Prometheus' error when it refuses (a query that does
        not parse is a 400)."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = response.json()
        assert body.get("status") == "success", f"{path} {dict(params)}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api("query_range", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                        "step": f"{step:g}"})
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str | None, start: float, end: float) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists over the dashboard range."""
        params: dict[str, Any] = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
        if match:
            params["match[]"] = match
        values: list[str] = self.api(f"label/{label}/values", params)
        return values

    def kill(self) -> None:
        if self.component and self.component.process:
            self.component.process.send_signal(signal.SIGKILL)
            self.component.process.wait()


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary("promtool")), *args], capture_output=True, text=True, timeout=60)
