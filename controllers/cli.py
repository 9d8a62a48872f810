"""The `tokenworks` command line: thin commands over library code."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from controllers import __version__

if TYPE_CHECKING:
    from crds.models import ModelDeployment

app = typer.Typer(
    name="tokenworks",
    help="Operate and autoscale LLM inference fleets (Triton + TensorRT-LLM) on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
)
crds_app = typer.Typer(help="The ModelDeployment CustomResourceDefinition.", no_args_is_help=True)
operator_app = typer.Typer(help="Run the operator.", no_args_is_help=True)
app.add_typer(crds_app, name="crds")
app.add_typer(operator_app, name="operator")

console = Console()
Kubeconfig = Annotated[str | None, typer.Option(envvar="KUBECONFIG", help="Path to a kubeconfig; "
                                                "in a pod the service account is used.")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")]


def load_model_deployment(path: Path) -> ModelDeployment:
    """A ModelDeployment manifest from a file; each invalid field is printed and the exit code is 2."""
    import yaml
    from pydantic import ValidationError

    from crds.models import ModelDeployment

    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        console.print(f"[red]{path}: not a YAML mapping[/]")
        raise typer.Exit(2)
    raw.setdefault("metadata", {}).setdefault("namespace", "default")
    raw["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
    try:
        return ModelDeployment.model_validate(raw)
    except ValidationError as error:
        for problem in error.errors():
            console.print(f"[red]{'.'.join(str(p) for p in problem['loc'])}[/]: {problem['msg']}")
        raise typer.Exit(2) from error


@app.callback()
def main() -> None:
    """Operate and autoscale LLM inference fleets (Triton + TensorRT-LLM) on Kubernetes."""


@app.command()
def version() -> None:
    """Print the Tokenworks version and the Python it runs on."""
    typer.echo(f"tokenworks {__version__} (python {platform.python_version()})")


@crds_app.command("generate")
def crds_generate(
    check: Annotated[bool, typer.Option(help="Fail if the checked-in YAML is out of date.")] = False,
    output: Annotated[Path | None, typer.Option(help="Write here instead of crds/.")] = None,
) -> None:
    """Generate crds/modeldeployment.yaml from the pydantic models."""
    from crds import generate

    target = output or generate.CRD_PATH
    if check:
        if not target.exists() or target.read_text() != generate.render():
            console.print(f"[red]{target} is out of date[/]: run `tokenworks crds generate`")
            raise typer.Exit(1)
        console.print(f"{target} is up to date")
        return
    generate.write(target)
    console.print(f"wrote {target}")


@operator_app.command("run")
def operator_run(
    kubeconfig: Kubeconfig = None,
    namespace: Annotated[list[str] | None, typer.Option(
        "--namespace", "-n", help="Watch only these namespaces (repeatable); default all.")] = None,
    leader_elect: Annotated[bool, typer.Option(help="Run only while holding the Lease.")] = True,
    lease_namespace: Annotated[str, typer.Option(envvar="POD_NAMESPACE")] = "tokenworks-system",
    lease_duration: Annotated[int, typer.Option(help="Seconds a leader's lease lasts.")] = 15,
    identity: Annotated[str | None, typer.Option(envvar="POD_NAME")] = None,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics; 0 disables.")] = 8080,
    health_port: Annotated[int, typer.Option(help="/healthz and /readyz; 0 disables.")] = 8081,
    resync_seconds: Annotated[float, typer.Option(help="Re-check every resource this often.")] = 300,
    prometheus_url: Annotated[str | None, typer.Option(envvar="TOKENWORKS_PROMETHEUS_URL",
                                                       help="Prometheus the autoscaler reads.")] = None,
    prometheus_token: Annotated[str | None, typer.Option(envvar="TOKENWORKS_PROMETHEUS_TOKEN",
                                                         help="Bearer token for Prometheus.")] = None,
    prometheus_ca_file: Annotated[str | None, typer.Option(help="CA bundle for Prometheus TLS.")] = None,
    autoscaler_tick: Annotated[float, typer.Option(help="Seconds between autoscaling decisions.")] = 15,
    prometheus_window: Annotated[str, typer.Option(help="rate() window of the stable signals.")] = "2m",
    prometheus_short_window: Annotated[str, typer.Option(help="rate() window of the panic signal.")] = "30s",
) -> None:
    """Run the operator (leader-elected) against the cluster."""
    from controllers.manager import ManagerConfig, main

    config = ManagerConfig(
        kubeconfig=kubeconfig, namespaces=list(namespace or []), leader_elect=leader_elect,
        lease_namespace=lease_namespace, lease_duration=lease_duration,
        renew_deadline=max(2, lease_duration * 2 // 3), metrics_port=metrics_port,
        health_port=health_port, resync_seconds=resync_seconds, prometheus_url=prometheus_url,
        prometheus_token=prometheus_token, prometheus_ca_file=prometheus_ca_file,
        autoscaler_tick_seconds=autoscaler_tick, prometheus_window=prometheus_window,
        prometheus_short_window=prometheus_short_window,
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


DEFAULT_TRACE = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
DEFAULT_DEPLOYMENT = Path(__file__).resolve().parents[1] / "examples" / "llama-8b-h100.yaml"


@app.command()
def simulate(
    trace: Annotated[Path, typer.Argument(help="Trace: Azure 2023 CSV, JSONL or generic CSV.")] = DEFAULT_TRACE,
    deployment: Annotated[Path, typer.Option("--deployment", "-f", help="ModelDeployment manifest.")]
    = DEFAULT_DEPLOYMENT,
    rate: Annotated[int, typer.Option(help="Multiply the arrival rate, keeping the trace's shape.")] = 1,
    time_scale: Annotated[float, typer.Option(help="Compress time by this factor (faster swings).")] = 1.0,
    start: Annotated[float, typer.Option(help="Window start, seconds into the trace.")] = 0.0,
    duration: Annotated[float | None, typer.Option(help="Window length in seconds (default: all).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.json and report.png.")] = Path("out"),
) -> None:
    """Replay a trace against a ModelDeployment with the live autoscaler's policy, in virtual time."""
    from rich.progress import Progress

    from controllers.simulation import output
    from controllers.simulation.simulator import Simulator, report
    from controllers.simulation.trace import TraceError, compress, load, multiply, window

    try:
        requests = load(trace)
        requests = compress(multiply(window(requests, start, duration), rate), time_scale)
        if not requests:
            raise TraceError(f"{trace}: no requests in the window [{start}, {start + (duration or 0)})")
    except TraceError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from error
    md = load_model_deployment(deployment)
    slo = md.spec.autoscaling.slo
    end = requests[-1].arrival
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {len(requests):,} requests", total=end or 1)
        result = Simulator(md, requests).run(lambda now: progress.update(task, completed=now))
    summary = report(result, slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3, len(requests))
    title = (f"{md.name}: {md.spec.model.profile} on {md.spec.gpu.product} x{md.spec.gpus_per_replica}, "
             f"{trace.name} x{rate}, {end / 60:.0f} min, SLO TTFT {slo.ttft_milliseconds} ms / ITL "
             f"{slo.inter_token_latency_milliseconds} ms")
    console.print(output.table(summary, title))
    out.mkdir(parents=True, exist_ok=True)
    meta = {"trace": str(trace), "deployment": str(deployment), "rate": rate, "timeScale": time_scale,
            "start": start, "duration": duration}
    output.write_json(out / "report.json", summary, result, meta)
    output.plot(out / "report.png", result, slo.ttft_milliseconds / 1e3, slo.inter_token_latency_milliseconds / 1e3,
                title)
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
        console.print(f"[red]modeldeployment {namespace}/{name} not found[/]")
        raise typer.Exit(1)
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
        console.print(f"[red]modeldeployment {namespace}/{name} not found[/]")
        raise typer.Exit(1)
    console.print(views.explain(obj))


def run() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":
    sys.exit(app())
