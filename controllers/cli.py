"""The `tokenworks` command line: thin commands over library code."""

from __future__ import annotations

import enum
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from controllers import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress, TaskID

    from crds.models import ModelDeployment

class ExitCode(enum.IntEnum):
    """What a `tokenworks` exit status means; every command's errors are mapped in ``explain_error``."""

    OK = 0
    FAILED = 1  # the command ran and reports a failure (crds generate --check: out of date)
    USAGE = 2  # bad arguments, or an invalid manifest or trace
    NOT_FOUND = 3  # the object, or the API serving it (the CRD), does not exist
    PERMISSION = 4  # the credentials were refused (401) or lack a permission (403)
    UNREACHABLE = 5  # no cluster at the configured address, or no usable kubeconfig
    API_ERROR = 6  # the API server refused the request otherwise (409, 422, 5xx)
    PORT_UNAVAILABLE = 7  # operator run: a port to listen on is taken
    INTERNAL = 70  # a bug: rerun with --debug for the traceback


EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 the command reports a failure; 2 bad arguments or an invalid manifest; 3 not "
    "found; 4 permission denied; 5 cannot reach the cluster (or no kubeconfig); 6 other API errors; 7 a port "
    "the operator listens on is taken; 70 internal error. Errors are one line; --debug (or TOKENWORKS_DEBUG=1) "
    "shows the traceback."
)
DEBUG_ENV = "TOKENWORKS_DEBUG"


class LogLevel(enum.StrEnum):
    """`operator run --log-level`: Python's level names, lower case as the Helm chart's values spell them."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _api_message(error: Any) -> str:
    """The apiserver's own sentence from a Status body, else the HTTP status and reason."""
    import json

    try:
        message = json.loads(error.body).get("message")
    except (TypeError, ValueError, AttributeError):  # no body, or not a Status
        message = None
    return _one_line(message or f"{error.status} {error.reason}")


def _root_cause(error: BaseException) -> str:
    """The innermost OS-level reason ("Connection refused", "Name or service not known"), if any."""
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain and len(chain) < 20:
        chain.append(seen)
        nested = getattr(seen, "reason", None)  # urllib3's MaxRetryError keeps its cause here
        seen = nested if isinstance(nested, BaseException) else (seen.__cause__ or seen.__context__)
    reasons = [e.strerror for e in chain if isinstance(e, OSError) and e.strerror]
    return reasons[-1] if reasons else _one_line(error)


def explain_error(error: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one line a person reads for an error no command handled itself."""
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.dynamic.exceptions import ResourceNotFoundError
    from urllib3.exceptions import HTTPError, MaxRetryError

    from controllers.factory.plane import ControlPlaneError
    from controllers.factory.run import FactoryError
    from controllers.kube import KindNotServed
    from controllers.listening import PortUnavailable
    from controllers.simulation.trace import TraceError

    if isinstance(error, PortUnavailable):
        return ExitCode.PORT_UNAVAILABLE, str(error)
    if isinstance(error, FactoryError | TraceError):
        return ExitCode.USAGE if isinstance(error, TraceError) else ExitCode.FAILED, f"factory: {_one_line(error)}"
    if isinstance(error, ControlPlaneError):
        return ExitCode.FAILED, f"factory: the control plane did not start: {_one_line(error)}"
    if isinstance(error, MaxRetryError):
        pool = error.pool
        where = f" at {pool.scheme}://{pool.host}:{pool.port}" if pool is not None else ""
        return ExitCode.UNREACHABLE, f"cannot reach the cluster{where}: {_root_cause(error)}"
    if isinstance(error, HTTPError):
        return ExitCode.UNREACHABLE, f"cannot reach the cluster: {_root_cause(error)}"
    if isinstance(error, ConfigException):
        return ExitCode.UNREACHABLE, (f"no usable cluster configuration: {_one_line(error)} (pass --kubeconfig or "
                                      "set KUBECONFIG, or run in a pod)")
    if isinstance(error, ResourceNotFoundError | KindNotServed):
        return ExitCode.NOT_FOUND, (f"not found: the API server serves no such kind ({_one_line(error)}); is the "
                                    "ModelDeployment CRD installed (kubectl apply -k operator/)?")
    if isinstance(error, ApiException):
        if error.status == 0:  # the client's own failure before any answer, e.g. TLS
            return ExitCode.UNREACHABLE, f"cannot reach the cluster: {_one_line(error.reason)}"
        if error.status == 404:
            return ExitCode.NOT_FOUND, f"not found: {_api_message(error)}"
        if error.status == 401:
            return ExitCode.PERMISSION, ("not authenticated: the API server refused the kubeconfig's credentials "
                                         f"({_api_message(error)})")
        if error.status == 403:
            return ExitCode.PERMISSION, f"permission denied: {_api_message(error)}"
        return ExitCode.API_ERROR, f"the API server refused the request ({error.status}): {_api_message(error)}"
    return ExitCode.INTERNAL, (f"internal error: {type(error).__name__}: {_one_line(error)} (rerun with --debug, "
                               f"or {DEBUG_ENV}=1, for the traceback)")


class ExitCodeGroup(TyperGroup):
    """The root command: an error no command handled becomes one line on stderr and an ``ExitCode``,
    in this one place; --debug keeps the traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own: usage errors, help, explicit exits
        except Exception as error:
            if ctx.params.get("debug"):  # --debug, or TOKENWORKS_DEBUG through the option's envvar
                raise
            code, message = explain_error(error)
            typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code) from error


app = typer.Typer(
    name="tokenworks",
    cls=ExitCodeGroup,
    help="Operate and autoscale LLM inference fleets (Triton + TensorRT-LLM) on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
crds_app = typer.Typer(help="The ModelDeployment CustomResourceDefinition.", no_args_is_help=True)
operator_app = typer.Typer(help="Run the operator.", no_args_is_help=True)
rules_app = typer.Typer(help="The Prometheus recording rules of the autoscaler's signals.", no_args_is_help=True)
app.add_typer(crds_app, name="crds")
app.add_typer(operator_app, name="operator")
factory_app = typer.Typer(help="A local AI factory: the real control plane, the operator, GPU nodes whose pods "
                          "are emulator twins, Prometheus, and traces replayed against it.", no_args_is_help=True)
app.add_typer(factory_app, name="factory")
app.add_typer(rules_app, name="rules")
trace_app = typer.Typer(help="Synthetic request traces for `tokenworks simulate`: reasoning and chat "
                        "length distributions, open-loop arrival processes.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")
model_app = typer.Typer(help="Model architectures: the catalogue of `spec.model.profile`, and "
                        "`spec.model.architecture` from a Hugging Face config.json.", no_args_is_help=True)
app.add_typer(model_app, name="model")

console = Console()
Kubeconfig = Annotated[str | None, typer.Option(envvar="KUBECONFIG", help="Path to a kubeconfig; "
                                                "in a pod the service account is used.")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")]


def load_model_deployment(path: Path, autoscaling: dict[str, Any] | None = None) -> ModelDeployment:
    """A ModelDeployment manifest from a file, with ``autoscaling`` (camelCase, ``slo`` merged field by
    field) over its spec.autoscaling; each invalid field is printed and the exit code is 2."""
    import yaml
    from pydantic import ValidationError

    from crds.models import ModelDeployment

    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        console.print(f"[red]{path}: not a YAML mapping[/]")
        raise typer.Exit(ExitCode.USAGE)
    raw.setdefault("metadata", {}).setdefault("namespace", "default")
    raw["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
    if autoscaling and isinstance(raw.get("spec"), dict):
        scaling = raw["spec"].setdefault("autoscaling", {}) or {}
        raw["spec"]["autoscaling"] = scaling
        for key, value in autoscaling.items():
            if key == "slo":
                scaling["slo"] = {**(scaling.get("slo") or {}), **value}
            else:
                scaling[key] = value
    try:
        return ModelDeployment.model_validate(raw)
    except ValidationError as error:
        for problem in error.errors():
            console.print(f"[red]{'.'.join(str(p) for p in problem['loc'])}[/]: {problem['msg']}")
        raise typer.Exit(ExitCode.USAGE) from error


@app.callback(epilog=EXIT_CODES_HELP)
def main(
    debug: Annotated[bool, typer.Option("--debug", envvar=DEBUG_ENV,
                                        help="Show the traceback of an unexpected error.")] = False,
) -> None:
    """Operate and autoscale LLM inference fleets (Triton + TensorRT-LLM) on Kubernetes."""


@app.command()
def version() -> None:
    """Print the Tokenworks version and the Python it runs on."""
    typer.echo(f"tokenworks {__version__} (python {platform.python_version()})")


@crds_app.command("generate")
def crds_generate(
    check: Annotated[bool, typer.Option(help="Fail if the checked-in YAML is out of date.")] = False,
    output: Annotated[Path | None, typer.Option(help="Write the CRD here instead of crds/ (and not the chart's "
                                                "copy).")] = None,
) -> None:
    """Generate crds/modeldeployment.yaml from the pydantic models, and the Helm chart's copy of it."""
    from crds import generate

    if output is not None:
        stale = [] if output.exists() and output.read_text() == generate.render() else [output]
    else:
        stale = generate.stale()
    if check:
        for target in stale:
            console.print(f"[red]{target} is out of date[/]: run `tokenworks crds generate`")
        if stale:
            raise typer.Exit(ExitCode.FAILED)
        console.print("up to date")
        return
    for target in [generate.write(output)] if output is not None else generate.write_all():
        console.print(f"wrote {target}")


@rules_app.command("generate")
def rules_generate(
    check: Annotated[bool, typer.Option(help="Fail if the checked-in file is out of date.")] = False,
    output: Annotated[Path | None, typer.Option(help="Write here instead of dashboards/rules/recording.yaml.")]
    = None,
    window: Annotated[str, typer.Option(help="The stable window the rules record (the operator's "
                                        "--prometheus-window).")] = "2m",
    short_window: Annotated[str, typer.Option(help="The panic window (--prometheus-short-window).")] = "30s",
) -> None:
    """Generate the recording rules from the autoscaler's own queries, for the given windows."""
    from controllers.metrics import rules
    from controllers.metrics.prometheus import PrometheusConfig

    target = output or rules.RECORDING_PATH
    text = rules.render(PrometheusConfig(url="", window=window, short_window=short_window))
    if check:
        if not target.exists() or target.read_text() != text:
            console.print(f"[red]{target} is out of date[/]: run `tokenworks rules generate`")
            raise typer.Exit(ExitCode.FAILED)
        console.print(f"{target} is up to date")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    console.print(f"wrote {target}")


@operator_app.command("run")
def operator_run(
    kubeconfig: Kubeconfig = None,
    namespace: Annotated[list[str] | None, typer.Option(
        "--namespace", "-n", help="Watch only these namespaces (repeatable); default all.")] = None,
    leader_elect: Annotated[bool, typer.Option(help="Run only while holding the Lease.")] = True,
    lease_namespace: Annotated[str, typer.Option(envvar="POD_NAMESPACE")] = "tokenworks-system",
    lease_name: Annotated[str, typer.Option(help="The Lease the replicas elect a leader with; two installations "
                                            "in one namespace need two names.")] = "tokenworks-operator",
    lease_duration: Annotated[int, typer.Option(
        min=4, help="Seconds a leader's lease lasts (at least 4: the renew deadline, 2/3 of it, must exceed "
                    "the 2 s retry).")] = 15,
    identity: Annotated[str | None, typer.Option(envvar="POD_NAME")] = None,
    metrics_port: Annotated[int, typer.Option(help="Port of the Prometheus metrics; 0 disables them. A second "
                                              "copy on one machine needs another port, or 0.")] = 8080,
    health_port: Annotated[int, typer.Option(help="Port of /healthz and /readyz; 0 disables them. A second "
                                             "copy on one machine needs another port, or 0.")] = 8081,
    resync_seconds: Annotated[float, typer.Option(help="Re-check every resource this often.")] = 300,
    prometheus_url: Annotated[str | None, typer.Option(envvar="TOKENWORKS_PROMETHEUS_URL",
                                                       help="Prometheus the autoscaler reads.")] = None,
    prometheus_token: Annotated[str | None, typer.Option(envvar="TOKENWORKS_PROMETHEUS_TOKEN",
                                                         help="Bearer token for Prometheus.")] = None,
    prometheus_ca_file: Annotated[str | None, typer.Option(help="CA bundle for Prometheus TLS.")] = None,
    autoscaler_tick: Annotated[float, typer.Option(help="Seconds between autoscaler passes; each ModelDeployment "
                                                   "decides when its own autoscaling.tickSeconds has passed.")] = 5,
    prometheus_window: Annotated[str, typer.Option(help="rate() window of the stable signals.")] = "2m",
    prometheus_short_window: Annotated[str, typer.Option(help="rate() window of the panic signal.")] = "30s",
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False, help="Least severe log lines written.")]
    = LogLevel.INFO,
    prometheus_recording_rules: Annotated[bool, typer.Option(
        help="Read the recorded series of dashboards/rules/recording.yaml where Prometheus has those rules "
             "loaded with this operator's windows and expressions; any other signal is read raw.")] = False,
) -> None:
    """Run the operator (leader-elected) against the cluster."""
    from controllers.manager import ManagerConfig, main

    config = ManagerConfig(
        kubeconfig=kubeconfig, namespaces=list(namespace or []), leader_elect=leader_elect,
        lease_name=lease_name, lease_namespace=lease_namespace, lease_duration=lease_duration,
        renew_deadline=max(2, lease_duration * 2 // 3), metrics_port=metrics_port,
        health_port=health_port, resync_seconds=resync_seconds, prometheus_url=prometheus_url,
        prometheus_token=prometheus_token, prometheus_ca_file=prometheus_ca_file,
        autoscaler_tick_seconds=autoscaler_tick, prometheus_window=prometheus_window,
        prometheus_short_window=prometheus_short_window, log_level=log_level.value,
        prometheus_recording_rules=prometheus_recording_rules,
    )
    if identity:
        config.identity = identity
    main(config)


@app.command()
def plan(
    path: Annotated[Path, typer.Argument(help="A ModelDeployment manifest (YAML).", exists=True, dir_okay=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="summary, or yaml for the full children.")] = "summary",
    replicas: Annotated[int | None, typer.Option(help="Render at this many replicas.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Also print the pod's prepare script, its launch "
                                       "command and every model-repository file.")] = False,
) -> None:
    """What the operator would create for a ModelDeployment, and what one replica can serve: a dry run
    that needs no cluster."""
    import yaml

    from controllers import views
    from inference_pods.templates import render_children

    md = load_model_deployment(path)
    from controllers.reconcile import desired_replicas

    count = desired_replicas(md) if replicas is None else replicas
    children = render_children(md, count, pod_monitor_api=True)
    if output == "yaml":
        typer.echo(yaml.safe_dump_all(children, sort_keys=False))
        return
    console.print(views.plan(md, children, count))
    if show:
        console.print(views.pod_details(md, children))


def usage_error(message: str) -> typer.Exit:
    """Print a bad argument's message and return the exit to raise (code USAGE)."""
    from rich.markup import escape

    console.print(f"[red]{escape(message)}[/]")
    return typer.Exit(ExitCode.USAGE)


DEFAULT_TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
DEFAULT_DEPLOYMENT = Path(__file__).resolve().parents[1] / "examples" / "llama-8b-h100.yaml"


def tracker(progress: Progress, task: TaskID) -> Callable[[float], None]:
    """A callback that moves ``task`` to the value it is given."""
    def update(done: float) -> None:
        progress.update(task, completed=done)
    return update


@app.command()
def simulate(
    trace: Annotated[Path, typer.Argument(help="Trace: Azure 2023 CSV, JSONL or generic CSV.")] = DEFAULT_TRACE,
    deployment: Annotated[Path, typer.Option("--deployment", "-f", help="ModelDeployment manifest.")]
    = DEFAULT_DEPLOYMENT,
    rate: Annotated[float, typer.Option(help="Multiply the arrival rate (1.5, 0.5: any factor > 0), keeping the "
                                        "trace's shape.")] = 1.0,
    time_scale: Annotated[float, typer.Option(help="Compress time by this factor (faster swings).")] = 1.0,
    start: Annotated[float, typer.Option(help="Window start, seconds into the trace.")] = 0.0,
    duration: Annotated[float | None, typer.Option(help="Window length in seconds (default: all).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json and report.png.")] = Path("out"),
    policy: Annotated[str | None, typer.Option(help="Scale with this policy instead of the live autoscaler "
                                               "(tokenworks): tokenworks-p99, hpa-gpu-util, hpa-in-flight, "
                                               "keda-queue, knative-kpa, dynamo-planner or static (the "
                                               "oracle's peak, or --start-replicas).")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Run every policy and the per-minute oracle on "
                                          "the same traffic: one table, one plot.")] = False,
    ttft_ms: Annotated[int | None, typer.Option(help="Override slo.ttftMilliseconds.")] = None,
    itl_ms: Annotated[int | None, typer.Option(help="Override slo.interTokenLatencyMilliseconds.")] = None,
    percentile: Annotated[float | None, typer.Option(help="Override slo.percentile (e.g. 0.99).")] = None,
    attainment: Annotated[float | None, typer.Option(help="Override slo.attainment, the share of requests to "
                                                     "meet the SLO (also the oracle's goal).")] = None,
    min_replicas: Annotated[int | None, typer.Option(help="Override autoscaling.minReplicas.")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Override autoscaling.maxReplicas.")] = None,
    start_replicas: Annotated[int | None, typer.Option(min=1, help="Replicas serving when the trace starts "
                                                       "(default: minReplicas; with --compare the oracle's "
                                                       "first minute) and static's count.")] = None,
) -> None:
    """Replay a trace against a ModelDeployment in virtual time, with the live autoscaler's policy (or
    --policy, or every policy with --compare); autoscaling is enabled whatever the manifest says."""
    import warnings

    from rich.markup import escape
    from rich.progress import Progress

    from controllers.simulation import output
    from controllers.simulation.oracle import feasible, oracle
    from controllers.simulation.policies import POLICIES, PolicyRun, simulate_policy
    from controllers.simulation.trace import (
        TraceError,
        TraceWarning,
        admissible,
        compress,
        load,
        multiply,
        require_window,
    )

    fail = usage_error

    if compare and policy is not None:
        raise fail("--compare runs every policy; leave out --policy")
    name = policy or "tokenworks"
    if name not in POLICIES:
        raise fail(f"unknown policy {name!r}; one of {', '.join(POLICIES)}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TraceWarning)
            loaded = load(trace)
        for warning in caught:
            console.print(f"[yellow]warning: {escape(str(warning.message))}[/]")
        chosen = require_window(loaded, start, duration, str(trace))
        requests = compress(multiply(chosen, rate), time_scale)
        if not requests:
            raise TraceError(f"{trace}: --rate {rate:g} keeps none of the window's {len(chosen):,} requests")
    except TraceError as error:
        raise fail(str(error)) from error

    scaling: dict[str, Any] = {"enabled": True}  # the point of simulating is the autoscaling
    slo_overrides = {key: value for key, value in (("ttftMilliseconds", ttft_ms),
                                                   ("interTokenLatencyMilliseconds", itl_ms),
                                                   ("percentile", percentile), ("attainment", attainment))
                     if value is not None}
    if slo_overrides:
        scaling["slo"] = slo_overrides
    if min_replicas is not None:
        scaling["minReplicas"] = min_replicas
    if max_replicas is not None:
        scaling["maxReplicas"] = max_replicas
    md = load_model_deployment(deployment, scaling)
    bounds = md.spec.autoscaling
    if bounds.min_replicas > bounds.max_replicas:
        raise fail(f"autoscaling.minReplicas {bounds.min_replicas} exceeds autoscaling.maxReplicas "
                   f"{bounds.max_replicas}")
    if start_replicas is not None and start_replicas > bounds.max_replicas:
        raise fail(f"--start-replicas {start_replicas} exceeds autoscaling.maxReplicas {bounds.max_replicas}")

    engine = md.spec.engine
    # The engine's max_seq_len is maxInputLength + maxOutputLength, within the model's context.
    sequence = min(engine.max_input_length + engine.max_output_length, md.spec.model.shape.context_length)
    requests, rejected = admissible(requests, engine.max_input_length, sequence)
    if not requests:
        raise fail(f"{trace}: all {rejected:,} requests of the window are over the engine's limits "
                   f"(maxInputLength {engine.max_input_length}, sequence {sequence} tokens)")
    slo = bounds.slo
    can_meet = sum(feasible(md, requests))
    end = requests[-1].arrival
    title = (f"{md.name}: {md.spec.model.shape_name} on {md.spec.gpu.product} x{md.spec.gpus_per_replica}, "
             f"{trace.name} x{rate:g}, {end / 60:.0f} min, SLO TTFT {slo.ttft_milliseconds} ms / ITL "
             f"{slo.inter_token_latency_milliseconds} ms at p{100 * slo.percentile:g}")
    meta: dict[str, Any] = {
        "trace": str(trace), "deployment": str(deployment), "rate": rate, "timeScale": time_scale, "start": start,
        "duration": duration, "policy": "compare" if compare else name,
        "autoscaling": bounds.model_dump(mode="json", by_alias=True), "rejected": rejected,
    }
    names = POLICIES if compare else [name]
    need: list[int] = []
    runs: list[PolicyRun] = []
    with Progress(console=console, transient=True) as progress:
        if compare or (name == "static" and start_replicas is None):
            minutes = int(end // 60) + 1
            task = progress.add_task(f"oracle: sizing {minutes} minutes", total=minutes)
            need = oracle(md, requests, slo.attainment, tracker(progress, task))
        # Only static reads the peak: the oracle's, unless --start-replicas says.
        peak = start_replicas if start_replicas is not None else max(need, default=1)
        # Compared, every policy starts warm, at the oracle's first minute (as bench/autoscaling.py does):
        # a cold start at minReplicas would bury the differences under the first minutes' queue, and
        # static starts at its peak anyway.
        initial = start_replicas
        if compare and initial is None:
            initial = max(bounds.min_replicas, need[0])
        for number, each in enumerate(names, start=1):
            label = f"{each} ({number}/{len(names)})" if compare else each
            task = progress.add_task(f"{label}: simulating {len(requests):,} requests", total=end or 1)
            runs.append(simulate_policy(each, md, requests, peak=peak, start=initial, feasible=can_meet,
                                        rejected=rejected, progress=tracker(progress, task)))
    # The count serving at time 0 (static's is its peak), the same for every compared policy but static.
    meta["startReplicas"] = initial if compare else runs[0].result.initial_replicas
    out.mkdir(parents=True, exist_ok=True)
    if compare:
        gpus = md.spec.gpus_per_replica
        console.print(output.compare_table(runs, need, gpus, slo.attainment, f"{title}: every policy"))
        output.write_compare_json(out / "report.json", runs, need, gpus, slo.attainment, meta)
        output.compare_plot(out / "report.png", runs, need, gpus, title)
    else:
        (run,) = runs
        console.print(output.table(run.report, f"{title}, policy {name}"))
        if need:
            meta["oraclePerMinute"] = need
        output.write_json(out / "report.json", run.report, run.result, meta)
        output.plot(out / "report.png", run.result, slo.ttft_milliseconds / 1e3,
                    slo.inter_token_latency_milliseconds / 1e3, f"{title}, policy {name}")
    console.print(f"wrote {out / 'report.json'} and {out / 'report.png'}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def emulate(ctx: typer.Context) -> None:
    """Run one emulated Triton + TensorRT-LLM replica (options: `tokenworks emulate --help`)."""
    from inference_pods.emulator.__main__ import main as emulator_main

    emulator_main(list(ctx.args))


@app.command()
def get(
    kubeconfig: Kubeconfig = None,
    namespace: Namespace = "default",
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
) -> None:
    """List ModelDeployments, like `kubectl get mdep`."""
    from controllers import views
    from controllers.kube import Kube, load_config
    from crds.models import API_VERSION, KIND

    kube = Kube(load_config(kubeconfig))
    items = kube.list(API_VERSION, KIND, None if all_namespaces else namespace)
    console.print(views.table(items, all_namespaces))


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="ModelDeployment name.")],
    kubeconfig: Kubeconfig = None,
    namespace: Namespace = "default",
) -> None:
    """Spec summary, conditions, children and recent Events of one ModelDeployment."""
    from controllers import views
    from controllers.kube import Kube, load_config
    from crds.models import API_VERSION, KIND

    kube = Kube(load_config(kubeconfig))
    obj = kube.get(API_VERSION, KIND, namespace, name)
    if obj is None:
        typer.secho(f"error: not found: modeldeployment {namespace}/{name}", err=True, fg=typer.colors.RED)
        raise typer.Exit(ExitCode.NOT_FOUND)
    children = views.children_of(kube, obj)
    events = kube.events_for(namespace, name)
    console.print(views.describe(obj, children, events))


@app.command()
def explain(
    name: Annotated[str, typer.Argument(help="ModelDeployment name.")],
    kubeconfig: Kubeconfig = None,
    namespace: Namespace = "default",
) -> None:
    """The autoscaler's last decision: each signal, its target, its recommendation, the rule that won,
    and what would change the outcome."""
    from controllers import views
    from controllers.kube import Kube, load_config
    from crds.models import API_VERSION, KIND

    obj = Kube(load_config(kubeconfig)).get(API_VERSION, KIND, namespace, name)
    if obj is None:
        typer.secho(f"error: not found: modeldeployment {namespace}/{name}", err=True, fg=typer.colors.RED)
        raise typer.Exit(ExitCode.NOT_FOUND)
    console.print(views.explain(obj))


class ArrivalKind(enum.StrEnum):
    """`trace generate --arrival`: the open-loop arrival processes of controllers.simulation.workloads."""

    POISSON = "poisson"
    GAMMA = "gamma"
    DIURNAL = "diurnal"
    RAMP = "ramp"


@trace_app.command("list")
def trace_list() -> None:
    """Name every workload with its mean lengths and its source."""
    from controllers.simulation.workloads import WORKLOADS

    for w in WORKLOADS.values():
        typer.echo(f"{w.name}: {w.summary}. Mean output {w.output.mean():,.0f} tokens (max "
                   f"{w.output.maximum:,.0f}), mean input {w.input.mean():,.0f} (max {w.input.maximum:,.0f}). "
                   f"Source: {w.source}")


@trace_app.command("generate")
def trace_generate(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write: .csv (generic CSV, seconds) "
                                         "or .jsonl (milliseconds).", dir_okay=False)],
    workload: Annotated[str, typer.Option(help="Length distribution (`tokenworks trace list`).")]
    = "deepseek-r1-production",
    arrival: Annotated[ArrivalKind, typer.Option(case_sensitive=False, help="poisson; gamma (gaps with --cv); "
                                                 "diurnal (a sinusoid, --amplitude, --period); ramp (--rate "
                                                 "to --rate-end).")] = ArrivalKind.POISSON,
    rate: Annotated[float, typer.Option(help="Mean requests per second (ramp: at the start).")] = 1.0,
    duration: Annotated[float, typer.Option(help="Seconds of arrivals.")] = 3600.0,
    seed: Annotated[int, typer.Option(help="The same seed gives the same trace.")] = 0,
    cv: Annotated[float | None, typer.Option(help="gamma: coefficient of variation of the gaps (1 is "
                                             "Poisson; over 1 is burstier).")] = None,
    amplitude: Annotated[float | None, typer.Option(help="diurnal: the swing, 0 to 1, as a share of --rate "
                                                    "(default 0.5).")] = None,
    period: Annotated[float | None, typer.Option(help="diurnal: seconds per cycle (default: --duration).")]
    = None,
    rate_end: Annotated[float | None, typer.Option(help="ramp: requests per second at the end.")] = None,
    max_input: Annotated[int | None, typer.Option(help="Clip prompts to this many tokens (the engine's "
                                                  "max input length).")] = None,
    max_output: Annotated[int | None, typer.Option(help="Clip answers to this many tokens (max_tokens).")]
    = None,
) -> None:
    """Write a synthetic trace that `tokenworks simulate` replays, and summarise it."""

    from controllers.simulation.workloads import (
        WORKLOADS,
        Arrival,
        Diurnal,
        Gamma,
        Poisson,
        Ramp,
        WorkloadError,
        generate,
        percentile,
        write,
    )

    fail = usage_error

    if workload not in WORKLOADS:
        raise fail(f"unknown workload {workload!r}; one of {', '.join(WORKLOADS)}")
    # An option that the chosen process ignores is a mistake worth saying, not a silent no-op.
    extra = {"--cv": (cv, ArrivalKind.GAMMA), "--amplitude": (amplitude, ArrivalKind.DIURNAL),
             "--period": (period, ArrivalKind.DIURNAL), "--rate-end": (rate_end, ArrivalKind.RAMP)}
    for flag, (value, kind) in extra.items():
        if value is not None and arrival != kind:
            raise fail(f"{flag} applies to --arrival {kind.value}, not {arrival.value}")
    if output.suffix not in (".csv", ".jsonl"):
        raise fail(f"{output}: the output must end in .csv (generic CSV) or .jsonl (JSONL)")
    try:
        process: Arrival
        if arrival == ArrivalKind.POISSON:
            process = Poisson(rate)
        elif arrival == ArrivalKind.GAMMA:
            process = Gamma(rate, 2.0 if cv is None else cv)
        elif arrival == ArrivalKind.DIURNAL:
            process = Diurnal(rate, 0.5 if amplitude is None else amplitude, duration if period is None else period)
        else:
            if rate_end is None:
                raise fail("--arrival ramp needs --rate-end (requests per second at the end)")
            process = Ramp(rate, rate_end, duration)
        generated = generate(WORKLOADS[workload], process, duration, seed, max_input, max_output)
    except WorkloadError as error:
        raise fail(str(error)) from None
    requests = generated.requests
    if not requests:
        raise fail(f"no request arrived in {duration:g} s at {process.describe()}; raise --rate or --duration")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write(requests, output)
    except OSError as error:
        raise fail(f"cannot write {output}: {error.strerror or error}") from None
    outs = [r.output_tokens for r in requests]
    ins = [r.input_tokens for r in requests]
    clipped = "".join(
        f" {count:,} {what} clipped at {flag} {limit:,}." for count, what, flag, limit in (
            (generated.clipped_inputs, "prompts", "--max-input", max_input),
            (generated.clipped_outputs, "answers", "--max-output", max_output)) if limit is not None)
    typer.echo(
        f"Wrote {len(requests):,} requests ({workload}, {process.describe()}, seed {seed}) over {duration:,.0f} s "
        f"to {output}: {len(requests) / duration:.2f} req/s. Output tokens mean {sum(outs) / len(outs):,.0f}, "
        f"p50 {percentile(outs, 0.5):,.0f}, p99 {percentile(outs, 0.99):,.0f}, max {max(outs):,}; input tokens "
        f"mean {sum(ins) / len(ins):,.0f}, p50 {percentile(ins, 0.5):,.0f}, p99 {percentile(ins, 0.99):,.0f}. "
        f"Offered {sum(outs) / duration:,.0f} output tokens/s.{clipped} Replay: tokenworks simulate {output} "
        "-f DEPLOYMENT.yaml")


def _kv_summary(architecture: Any) -> str:
    """KV bytes per token in BF16 and FP8, and what the sliding-window layers add at short context."""
    from inference_pods.profiles import bytes_per_value

    values = architecture.kv_values_per_token()
    text = (f"KV {values:,.0f} values/token = {values * bytes_per_value('bf16') / 1024:,.1f} KiB in BF16, "
            f"{values * bytes_per_value('fp8') / 1024:,.1f} KiB in FP8")
    window = architecture.sliding_window
    if window is not None:
        text += (f" (long context; the {window.layers} sliding-window layers add "
                 f"{window.layers * architecture.kv_values_per_layer:,} values/token for the last "
                 f"{window.window:,} tokens)")
    return text


@model_app.command("from-config")
def model_from_config(
    path: Annotated[Path, typer.Argument(help="A Hugging Face config.json.")],
    name: Annotated[str | None, typer.Option(help="Also print spec.model.name (e.g. llama-3-1-8b).")] = None,
) -> None:
    """Print the `architecture:` block of spec.model that a Hugging Face config.json describes, ready to paste
    in place of `profile:`, with its parameters and KV bytes per token as a comment."""
    import json
    import re

    import yaml

    from crds.hf_config import ConfigError, convert
    from crds.models import ModelSpec

    def fail(message: str) -> typer.Exit:
        # stderr and unwrapped, unlike usage_error: stdout is the YAML, often redirected into a manifest.
        typer.echo(f"error: {_one_line(message)}", err=True)
        return typer.Exit(ExitCode.USAGE)

    if name is not None:
        name_field = ModelSpec.model_fields["name"]
        pattern = next(m.pattern for m in name_field.metadata if getattr(m, "pattern", None))
        if len(name) > 63 or not re.fullmatch(pattern, name):
            raise fail(f"--name {name!r} is not a valid spec.model.name: lowercase letters, digits, '-' and '.', "
                       "starting and ending with a letter or digit, at most 63 characters")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise fail(f"{path}: cannot read it: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise fail(f"{path}: not a text file (a config.json is UTF-8 JSON)") from None
    except json.JSONDecodeError as error:
        raise fail(f"{path}: not JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
    try:
        conversion = convert(config)
    except ConfigError as error:
        raise fail(f"{path}: {error}") from None
    architecture = conversion.architecture
    total, active = architecture.total_parameters / 1e9, architecture.active_parameters / 1e9
    lines = [f"# {path.name}: {total:,.2f} B parameters, {active:,.2f} B active per token; "
             f"{_kv_summary(architecture)}"]
    lines += [f"# note: {note}" for note in conversion.notes]
    block: dict[str, Any] = {} if name is None else {"name": name}
    block["architecture"] = architecture.model_dump(mode="json", by_alias=True, exclude_defaults=True,
                                                    exclude_none=True)
    typer.echo("\n".join(lines) + "\n" + yaml.safe_dump(block, sort_keys=False), nl=False)


@model_app.command("list")
def model_list() -> None:
    """The catalogue (`spec.model.profile`): each model's parameters and KV cache per token."""
    from crds.catalogue import CATALOGUE

    width = max(map(len, CATALOGUE))
    typer.echo(f"{'PROFILE':<{width}}  {'TOTAL':>8}  {'ACTIVE':>8}  {'KV VALUES/TOKEN':>15}  {'BF16':>9}  {'FP8':>9}")
    for profile, architecture in CATALOGUE.items():
        values = architecture.kv_values_per_token()
        window = architecture.sliding_window
        typer.echo(f"{profile:<{width}}  {architecture.total_parameters / 1e9:>7.1f}B  "
                   f"{architecture.active_parameters / 1e9:>7.1f}B  {values:>15,.0f}  {values * 2 / 1024:>5.1f} KiB  "
                   f"{values / 1024:>5.1f} KiB"
                   + ("" if window is None else f"  + {window.layers} layers windowed to {window.window:,} tokens"))
    typer.echo("KV per token at long context; a sliding-window layer holds only its window's last tokens.")


def run() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":
    sys.exit(app())


@factory_app.command("up")
def factory_up(
    scenario: Annotated[Path, typer.Option(help="The scenario: nodes, ModelDeployments, traffic, compression.",
                                           dir_okay=False)] = Path("examples/factory/scenario.yaml"),
    out: Annotated[Path, typer.Option(help="Where factory.json and the panels go.")] = Path("out"),
    keep: Annotated[bool, typer.Option("--keep", help="Stay up after the scenario, for kubectl.")] = False,
    headless: Annotated[bool, typer.Option("--headless", help="No live view (CI).")] = False,
    workdir: Annotated[Path | None, typer.Option(help="State, logs and pod roots (default: the cache's "
                                                 "factory/).")] = None,
) -> None:
    """Start the factory and run the scenario; everything started is stopped at the end (or with --keep, at
    Ctrl-C or `tokenworks factory down`)."""
    from controllers.factory.run import up

    up(scenario, out, keep, headless, workdir, console)


@factory_app.command("down")
def factory_down(
    workdir: Annotated[Path | None, typer.Option(help="The factory's work directory.")] = None,
) -> None:
    """Stop a factory left running with --keep (every process it recorded)."""
    from controllers.factory.run import default_workdir, stop_recorded

    stopped = stop_recorded(workdir or default_workdir())
    console.print(f"stopped {len(stopped)} processes" if stopped else "no factory is running")
