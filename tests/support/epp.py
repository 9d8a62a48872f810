"""A test double of a Gateway API Inference Extension endpoint picker's /metrics: the cited exposition of
tests/fixtures/epp/exposition.txt, served on a loopback port, its counters growing by their fixture value
at every scrape (so rates are steady and quantiles are the fixture's), its gauges as written."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.controlplane import REPO_ROOT, free_port

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "epp" / "exposition.txt"
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})? (?P<value>\S+)$")
TYPE = re.compile(r"^# TYPE (?P<name>\S+) (?P<type>\S+)$")


def render(text: str, scrapes: int) -> str:
    """The exposition after ``scrapes`` scrapes: counter and histogram samples times ``scrapes``."""
    types: dict[str, str] = {}
    out = []
    for line in text.splitlines():
        declared = TYPE.match(line)
        if declared:
            types[declared["name"]] = declared["type"]
        sample = SAMPLE.match(line)
        if sample:
            name = sample["name"]
            family = next((f for f in types if name in (f, f"{f}_bucket", f"{f}_sum", f"{f}_count", f"{f}_total")),
                          name)
            if types.get(family) in ("counter", "histogram"):
                value = float(sample["value"]) * scrapes
                line = f"{name}{sample['labels'] or ''} {value:g}"
        out.append(line)
    return "\n".join(out) + "\n"


class EndpointPickerDouble:
    def __init__(self, fixture: Path = FIXTURE, host: str = "127.0.0.1") -> None:
        self.text = fixture.read_text()
        self.scrapes = 0
        self.lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                with double.lock:
                    double.scrapes += 1
                    body = render(double.text, double.scrapes).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # quiet in test output
                pass

        self.server = ThreadingHTTPServer((host, free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> EndpointPickerDouble:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
