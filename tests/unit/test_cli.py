"""The `tokenworks` CLI without a cluster: its commands, help, and cluster errors as one line and an exit code."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from controllers.cli import EXIT_CODES_HELP, ExitCode, app, explain_error
from controllers.listening import PortUnavailable
from controllers.simulation.policies import POLICIES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.startswith("tokenworks ")


def test_crds_generate_check_passes_on_the_checked_in_yaml() -> None:
    result = runner.invoke(app, ["crds", "generate", "--check"])
    assert result.exit_code == 0, result.output


def test_crds_generate_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text("# old\n")
    result = runner.invoke(app, ["crds", "generate", "--check", "--output", str(stale)], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "out of date" in result.output


def test_rules_generate_check_passes_on_the_checked_in_file() -> None:
    result = runner.invoke(app, ["rules", "generate", "--check"])
    assert result.exit_code == 0, result.output


def test_rules_generate_writes_other_windows_and_check_sees_the_difference(tmp_path: Path) -> None:
    out = tmp_path / "recording.yaml"
    written = runner.invoke(app, ["rules", "generate", "--output", str(out), "--window", "10s",
                                  "--short-window", "5s"])
    assert written.exit_code == 0, written.output
    assert "nv_inference_request_success:rate10s" in out.read_text()
    assert "[5s]" in out.read_text() and "[2m]" not in out.read_text()
    stale = runner.invoke(app, ["rules", "generate", "--check", "--output", str(out)], env={"COLUMNS": "300"})
    assert stale.exit_code == 1 and "out of date" in stale.output


def test_plan_summarises_children_and_capacity() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLES / "llama-70b-h200-tp4.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("Llama-3.3-70B bf16 on 4 x H200-SXM", "weights per GPU 35.3 GB",
                 "start with the model cache empty about 210 s", "with the cache key complete 69 s",
                 "Deployment", "llama-70b-engine", "PodDisruptionBudget", "http 8000, grpc 8001, metrics 8002"):
        assert text in result.output, text


def test_plan_show_prints_the_pod_and_its_repository() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLES / "llama-70b-h200-tp4.yaml"), "--show"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("Init container prepare: bash /etc/tokenworks/prepare.sh", "ngc registry model download-version",
                 "Container triton: mpirun --allow-run-as-root -n 1 tritonserver", "tensorrt_llm/config.pbtxt",
                 "tensorrt_llm/1/model.yaml", "tensor_parallel_size: 4", "decoupled: true"):
        assert text in result.output, text


def test_plan_yaml_is_the_operator_rendering() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLES / "fixed-replicas.yaml"), "-o", "yaml", "--replicas", "3"])
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.output) if d]
    assert [d["kind"] for d in documents] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                              "PodMonitor"]
    assert documents[1]["spec"]["replicas"] == 3


def test_plan_reports_each_invalid_field(tmp_path: Path) -> None:
    manifest = yaml.safe_load((EXAMPLES / "llama-8b-h100.yaml").read_text())
    manifest["spec"]["engine"]["precision"] = "fp6"
    manifest["spec"]["parallelism"] = {"tensor": 3}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(manifest))
    result = runner.invoke(app, ["plan", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "spec.engine.precision" in result.output
    assert "spec.parallelism.tensor" in result.output


def write_trace(path: Path, seconds: float, rate: float, busy_after: float | None = None, busy_rate: float = 0.0,
                extra: str = "") -> Path:
    """A generic-CSV trace: ``rate`` requests/s, ``busy_rate`` after ``busy_after`` seconds."""
    calm = seconds if busy_after is None else busy_after
    times = [i / rate for i in range(round(calm * rate))] + \
        [calm + i / busy_rate for i in range(round((seconds - calm) * busy_rate))]
    rows = ["arrival_seconds,input_tokens,output_tokens"]
    rows += [f"{t:.3f},{800 + 37 * (i % 11)},{200 + 13 * (i % 7)}" for i, t in enumerate(times)]
    path.write_text("\n".join(rows) + "\n" + extra)
    return path


def simulate(*args: str) -> Result:
    return runner.invoke(app, ["simulate", *args], env={"COLUMNS": "200"})


def report_of(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "report.json").read_text()))


def test_simulate_a_peer_policy_by_name(tmp_path: Path) -> None:
    trace, out = write_trace(tmp_path / "t.csv", 120, 3), tmp_path / "out"
    result = simulate(str(trace), "--policy", "hpa-in-flight", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "policy hpa-in-flight" in result.output
    assert report_of(out)["meta"]["policy"] == "hpa-in-flight"
    assert (out / "report.png").read_bytes().startswith(b"\x89PNG")


def test_simulate_compare_runs_every_policy_and_the_oracle(tmp_path: Path) -> None:
    trace, out = write_trace(tmp_path / "t.csv", 120, 3), tmp_path / "out"
    result = simulate(str(trace), "--compare", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = {line.split()[0] for line in result.output.splitlines() if line.strip()}
    assert {*POLICIES, "oracle"} <= rows
    text = " ".join(result.output.split())  # the caption wraps to the table's width
    assert "0.00% infeasible (miss the SLO even alone on an idle replica); 0 rejected" in text
    report = report_of(out)
    assert [p["policy"] for p in report["policies"]] == POLICIES
    assert report["oracle"]["perMinute"] == [1, 1]  # 3 requests/s need one replica, in each minute
    static = next(p for p in report["policies"] if p["policy"] == "static")
    assert static["ratioToOracle"] == pytest.approx(1.0, rel=0.05)  # the oracle's peak, all the time
    assert (out / "report.png").read_bytes().startswith(b"\x89PNG")


def test_simulate_an_unknown_policy_is_a_usage_error(tmp_path: Path) -> None:
    trace, out = write_trace(tmp_path / "t.csv", 60, 1), tmp_path / "out"
    result = simulate(str(trace), "--policy", "hpa", "--out", str(out))
    assert result.exit_code == 2
    assert "unknown policy 'hpa'; one of tokenworks, tokenworks-p99, hpa-gpu-util" in result.output
    assert not out.exists()
    result = simulate(str(trace), "--policy", "static", "--compare", "--out", str(out))
    assert result.exit_code == 2 and "leave out --policy" in result.output


@pytest.mark.parametrize(("window", "message"), [
    (["--start", "10000"],
     "no requests in the window from 10,000.0 s to the end; the trace spans 0.0 to 59.0 s (60 requests)"),
    (["--start", "100", "--duration", "60"], "no requests in the window from 100.0 s to 160.0 s"),
    (["--duration", "0"], "the window duration must be positive, got 0 s"),
])
def test_simulate_an_empty_window_is_a_clear_error(tmp_path: Path, window: list[str], message: str) -> None:
    trace, out = write_trace(tmp_path / "t.csv", 60, 1), tmp_path / "out"
    result = simulate(str(trace), *window, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_simulate_overrides_reach_the_spec(tmp_path: Path) -> None:
    # 2 requests/s, then 40: the autoscaler goes above two replicas unless capped.
    trace = write_trace(tmp_path / "t.csv", 150, 2, busy_after=30, busy_rate=40)
    free, capped = tmp_path / "free", tmp_path / "capped"
    assert simulate(str(trace), "--out", str(free)).exit_code == 0
    assert max(e["desired"] for e in report_of(free)["timeline"]) > 2
    result = simulate(str(trace), "--out", str(capped), "--max-replicas", "2", "--ttft-ms", "500", "--itl-ms", "50",
                      "--percentile", "0.9", "--attainment", "0.95")
    assert result.exit_code == 0, result.output
    assert "SLO TTFT 500 ms / ITL 50 ms at p90" in result.output
    report = report_of(capped)
    assert max(e["desired"] for e in report["timeline"]) == 2
    assert report["meta"]["autoscaling"]["maxReplicas"] == 2
    assert report["meta"]["autoscaling"]["slo"] == {"ttftMilliseconds": 500, "interTokenLatencyMilliseconds": 50,
                                                    "percentile": 0.9, "attainment": 0.95}


def test_simulate_min_start_replicas_and_static(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", 120, 3)
    floor, fixed, peak = tmp_path / "floor", tmp_path / "fixed", tmp_path / "peak"
    assert simulate(str(trace), "--out", str(floor), "--min-replicas", "3").exit_code == 0
    assert {e["desired"] for e in report_of(floor)["timeline"]} == {3}
    # Manifests that turn autoscaling off are simulated with it on.
    result = simulate(str(trace), "-f", str(EXAMPLES / "fixed-replicas.yaml"), "--policy", "static",
                      "--start-replicas", "4", "--out", str(fixed))
    assert result.exit_code == 0, result.output
    report = report_of(fixed)
    assert {e["desired"] for e in report["timeline"]} == {4} and report["report"]["max_replicas"] == 4
    assert simulate(str(trace), "--policy", "static", "--out", str(peak)).exit_code == 0
    report = report_of(peak)
    assert report["meta"]["oraclePerMinute"] == [1, 1]
    assert {e["desired"] for e in report["timeline"]} == {1}
    result = simulate(str(trace), "--min-replicas", "5", "--max-replicas", "2", "--out", str(tmp_path / "bad"))
    assert result.exit_code == 2 and "minReplicas 5 exceeds autoscaling.maxReplicas 2" in result.output
    result = simulate(str(trace), "--percentile", "1.5", "--out", str(tmp_path / "bad"))
    assert result.exit_code == 2 and "spec.autoscaling.slo.percentile" in result.output


def test_simulate_counts_rejected_prompts_and_never_simulates_them(tmp_path: Path) -> None:
    # The 8B example keeps the default limits: maxInputLength 8192, maxOutputLength 4096.
    trace = write_trace(tmp_path / "t.csv", 60, 2, extra="59.8,8193,10\n59.9,8000,4300\n59.95,8192,4096\n")
    out = tmp_path / "out"
    result = simulate(str(trace), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert re.search(r"rejected \(over the engine's maxInputLength or sequence length\)\s+2\b", result.output)
    report = report_of(out)
    assert report["rejected"] == 2 and report["report"]["rejected"] == 2
    assert report["report"]["requests"] == 121  # 120 at 2 requests/s and the one at both limits exactly
    assert report["report"]["completed"] + report["report"]["dropped"] == 121


def test_simulate_takes_fractional_rates(tmp_path: Path) -> None:
    trace, out = write_trace(tmp_path / "t.csv", 60, 2), tmp_path / "out"
    result = simulate(str(trace), "--rate", "1.5", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "t.csv x1.5" in result.output
    assert report_of(out)["report"]["requests"] == 180


def test_simulate_prints_a_warning_for_jsonl_in_seconds(tmp_path: Path) -> None:
    trace, out = tmp_path / "s.jsonl", tmp_path / "out"
    trace.write_text("".join(f'{{"timestamp": {i * 0.5}, "input_length": 100, "output_length": 20, '
                             f'"hash_ids": [{i}]}}\n' for i in range(200)))
    result = simulate(str(trace), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "look like seconds" in result.output
    assert "multiply them by 1000" in result.output


def test_simulate_help_names_every_policy() -> None:
    result = runner.invoke(app, ["simulate", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert all(name in text for name in POLICIES), text


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["operator", "run", "-h"], ["describe", "-h"]])
def test_h_is_help_too(args: list[str]) -> None:
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_help_documents_the_exit_codes_and_port_zero() -> None:
    text = " ".join(runner.invoke(app, ["-h"], env={"COLUMNS": "200"}).output.split())
    assert " ".join(EXIT_CODES_HELP.split()) in text
    assert all(f"{code.value} " in EXIT_CODES_HELP for code in ExitCode if code)
    text = " ".join(runner.invoke(app, ["operator", "run", "-h"], env={"COLUMNS": "200"}).output.split())
    assert text.count("0 disables them") == 2, text


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting is refused at once, and nothing else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def one_error_line(result: Result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_an_unreachable_cluster_is_one_line_naming_it(tmp_path: Path, closed_port: int) -> None:
    config = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{closed_port}")
    for command in (["get"], ["describe", "x"], ["explain", "x"], ["get", "-A"]):
        result = runner.invoke(app, [*command, "--kubeconfig", str(config)])
        assert result.exit_code == ExitCode.UNREACHABLE, result.output
        assert one_error_line(result) == (f"error: cannot reach the cluster at https://127.0.0.1:{closed_port}: "
                                          "Connection refused")


def test_debug_keeps_the_traceback(tmp_path: Path, closed_port: int) -> None:
    from urllib3.exceptions import MaxRetryError

    config = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{closed_port}")
    result = runner.invoke(app, ["--debug", "get", "--kubeconfig", str(config)])
    assert isinstance(result.exception, MaxRetryError)
    result = runner.invoke(app, ["get", "--kubeconfig", str(config)], env={"TOKENWORKS_DEBUG": "1"})
    assert isinstance(result.exception, MaxRetryError)


def test_no_kubeconfig_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["get", "--kubeconfig", str(tmp_path / "missing")])
    assert result.exit_code == ExitCode.UNREACHABLE
    assert "no usable cluster configuration" in one_error_line(result)


GROUPS = {"kind": "APIGroupList", "groups": [{"name": "tokenworks.dev", "versions": [
    {"groupVersion": "tokenworks.dev/v1alpha1", "version": "v1alpha1"}],
    "preferredVersion": {"groupVersion": "tokenworks.dev/v1alpha1", "version": "v1alpha1"}}]}
RESOURCES = {"kind": "APIResourceList", "groupVersion": "tokenworks.dev/v1alpha1", "resources": [
    {"name": "modeldeployments", "singularName": "modeldeployment", "namespaced": True,
     "kind": "ModelDeployment", "verbs": ["get", "list"]}]}


class FakeApiServer:
    """Just enough of an apiserver over plain HTTP: discovery of tokenworks.dev, then canned answers."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, dict[str, Any]]] = {
            "/version": (200, {"major": "1", "minor": "36", "gitVersion": "v1.36.3"}),
            "/apis": (200, GROUPS),
            "/apis/tokenworks.dev/v1alpha1": (200, RESOURCES),
        }
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = answers.get(self.path.split("?")[0], (404, status_body(404, "NotFound", "not found")))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


LIST = "/apis/tokenworks.dev/v1alpha1/namespaces/default/modeldeployments"
FORBIDDEN = ('modeldeployments.tokenworks.dev is forbidden: User "system:serviceaccount:default:x" cannot list '
             'resource "modeldeployments" in API group "tokenworks.dev" in the namespace "default"')


@pytest.mark.parametrize(("answer", "code", "line"), [
    ((403, status_body(403, "Forbidden", FORBIDDEN)), ExitCode.PERMISSION, f"error: permission denied: {FORBIDDEN}"),
    ((401, status_body(401, "Unauthorized", "Unauthorized")), ExitCode.PERMISSION,
     "error: not authenticated: the API server refused the kubeconfig's credentials (Unauthorized)"),
    ((500, status_body(500, "InternalError", "etcdserver: request timed out")), ExitCode.API_ERROR,
     "error: the API server refused the request (500): etcdserver: request timed out"),
], ids=["403", "401", "500"])
def test_api_errors_are_one_line_with_the_servers_message(
    tmp_path: Path, api: FakeApiServer, answer: tuple[int, dict[str, Any]], code: ExitCode, line: str
) -> None:
    api.answers[LIST] = answer
    result = runner.invoke(app, ["get", "--kubeconfig", str(kubeconfig(tmp_path / "kubeconfig", api.url))])
    assert result.exit_code == code, result.output
    assert one_error_line(result) == line


def test_a_missing_model_deployment_is_not_found(tmp_path: Path, api: FakeApiServer) -> None:
    result = runner.invoke(app, ["describe", "gone", "--kubeconfig", str(kubeconfig(tmp_path / "kc", api.url))])
    assert result.exit_code == ExitCode.NOT_FOUND
    assert one_error_line(result) == "error: not found: modeldeployment default/gone"


def test_a_cluster_without_the_crd_is_not_found_and_says_so(tmp_path: Path, api: FakeApiServer) -> None:
    api.answers["/apis"] = (200, {"kind": "APIGroupList", "groups": []})
    result = runner.invoke(app, ["get", "--kubeconfig", str(kubeconfig(tmp_path / "kc", api.url))])
    assert result.exit_code == ExitCode.NOT_FOUND
    assert "is the ModelDeployment CRD installed (kubectl apply -k operator/)?" in one_error_line(result)


def test_an_unexpected_error_is_internal_and_points_to_debug() -> None:
    code, line = explain_error(KeyError("spec"))
    assert code == ExitCode.INTERNAL and line == ("internal error: KeyError: 'spec' (rerun with --debug, or "
                                                  "TOKENWORKS_DEBUG=1, for the traceback)")
    assert explain_error(PortUnavailable("cannot listen"))[0] == ExitCode.PORT_UNAVAILABLE


@pytest.mark.parametrize("flag", ["--metrics-port", "--health-port"])
def test_a_second_operator_on_a_taken_port_names_the_port_and_flag(
    tmp_path: Path, api: FakeApiServer, flag: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--health-port" if flag == "--metrics-port" else "--metrics-port"
        # The real process: its exit status and stderr, as a person starting a second copy sees them.
        result = subprocess.run(
            [sys.executable, "-m", "controllers.cli", "operator", "run", "--kubeconfig",
             str(kubeconfig(tmp_path / "kc", api.url)), f"{flag}={port}", f"{other}=0", "--no-leader-elect"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == ExitCode.PORT_UNAVAILABLE, result.stderr
    assert result.stderr.splitlines() == [
        f"error: cannot listen on port {port} ({flag}): Address already in use; another copy of the operator? "
        f"Pass {flag}=0 to disable it, or another port"]


def test_a_lease_too_short_for_fencing_is_refused_before_anything_starts() -> None:
    result = runner.invoke(app, ["operator", "run", "--lease-duration", "3"])
    assert result.exit_code == 2
    assert "--lease-duration" in result.output


def test_operator_run_takes_the_lease_name_and_log_level_the_chart_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr("controllers.manager.main", seen.append)
    result = runner.invoke(app, ["operator", "run", "--lease-name=team-a-operator", "--log-level=DEBUG"])
    assert result.exit_code == 0, result.output
    (config,) = seen
    assert config.lease_name == "team-a-operator" and config.log_level == "debug"
    assert runner.invoke(app, ["operator", "run", "--log-level=loud"]).exit_code == ExitCode.USAGE


def test_operator_run_passes_the_recording_rules_option_to_the_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    from controllers import manager

    seen: list[manager.ManagerConfig] = []
    monkeypatch.setattr(manager, "main", seen.append)
    assert runner.invoke(app, ["operator", "run", "--prometheus-url", "http://127.0.0.1:9090"]).exit_code == 0
    assert runner.invoke(app, ["operator", "run", "--prometheus-recording-rules"]).exit_code == 0
    assert [c.prometheus_recording_rules for c in seen] == [False, True]
