"""The emulator starts as the pod does: from the Triton container's command line and the model
repository the operator rendered.

``materialize`` lays a rendered pod's files under a local root as the pod would see them (the
ConfigMap's items at ``/etc/tokenworks``, the prepare step's repository in the model cache), and
``read_launch`` reads a ``mpirun ... tritonserver ...`` command line, or the OpenAI frontend's
``python3 .../openai_frontend/main.py ...``, and the repository it names: ports, metric switches, models,
their ``config.pbtxt`` (parsed with Triton's ``model_config_pb2``) and, for the LLM-API model,
``model.yaml``. The emulator then serves exactly those models.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from crds.models import ModelDeployment
from inference_pods.emulator.metrics import ExpositionConfig, ModelMetricsConfig
from inference_pods.repository import TRTLLM_MODEL, launch_command, launch_env
from inference_pods.templates import config_items, config_map

ENGINE_CONFIG_ENV = "TOKENWORKS_ENGINE_CONFIG"
DEFAULT_ENGINE_CONFIG = "/etc/tokenworks/engine.json"


class LaunchError(ValueError):
    """The command line or repository is not one Triton would start from."""


def parse_model_config(text: str, where: str = "config.pbtxt") -> Any:
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise LaunchError(f"{where}: {error}") from error
    return config


@dataclass(frozen=True)
class RepositoryModel:
    name: str
    backend: str  # "python", "tensorrtllm", or "" for an ensemble
    platform: str
    max_batch_size: int
    decoupled: bool
    first_response_buckets: tuple[float, ...] | None
    inputs: tuple[str, ...]
    parameters: dict[str, str]
    llm_args: dict[str, Any] | None  # model.yaml of an LLM-API model
    steps: tuple[str, ...] = ()  # an ensemble's composing models
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Launch:
    """What the twin needs to serve as the pod would."""

    repository: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    world_size: int
    allow_metrics: bool
    histograms: bool
    gpu_metrics: bool
    cpu_metrics: bool
    models: tuple[RepositoryModel, ...]
    engine: dict[str, Any]  # engine.json from the ConfigMap: model profile, GPU, limits
    frontend: str = "triton"  # or "openai": Triton's OpenAI frontend (main.py) is the process
    openai_port: int = 0
    kserve: bool = True  # KServe v2 HTTP and gRPC served (the OpenAI frontend's --enable-kserve-frontends)
    tokenizer: str | None = None  # main.py's --tokenizer: chat completions need one
    default_max_tokens: int = 16  # main.py's --default-max-tokens

    @property
    def served(self) -> list[str]:
        names = [m.name for m in self.models]
        return [n for n in ("ensemble", "tensorrt_llm_bls") if n in names] or \
            [n for n in names if n == TRTLLM_MODEL]

    def model(self, name: str) -> RepositoryModel | None:
        return next((m for m in self.models if m.name == name), None)

    def exposition(self, gpus: int) -> ExpositionConfig:
        # The Triton release from the image tag (26.07-trtllm-python-py3 -> 26.07); a digest or a tag
        # without one counts as current.
        found = re.search(r":(\d{2}\.\d{2})[^/]*$", str(self.engine.get("image", "")))
        release = found.group(1) if found else "99.99"
        return ExpositionConfig(
            models=tuple(ModelMetricsConfig(m.name, m.decoupled, m.first_response_buckets,
                                            trtllm_backend=m.backend == "tensorrtllm") for m in self.models),
            histograms=self.histograms, gpu_metrics=self.gpu_metrics, cpu_metrics=self.cpu_metrics,
            first_response_for_non_decoupled=release >= "26.01", gpus=gpus)


def _flag(args: list[str], name: str) -> str | None:
    for arg in args:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def _ranks(argv: list[str]) -> list[list[str]]:
    """The tritonserver argument lists of each rank of ``mpirun ... : ...`` (or a bare tritonserver)."""
    segments: list[list[str]] = []
    current: list[str] = []
    for arg in argv:
        if arg == ":":
            segments.append(current)
            current = []
        else:
            current.append(arg)
    segments.append(current)
    ranks = []
    for segment in segments:
        binaries = [i for i, a in enumerate(segment) if os.path.basename(a) == "tritonserver"]
        if not binaries:
            raise LaunchError(f"no tritonserver in the command line segment {' '.join(segment)!r}")
        ranks.append(segment[binaries[0] + 1:])
    return ranks


def _local(root: Path | None, path: str) -> Path:
    return root / path.lstrip("/") if root is not None and path.startswith("/") else Path(path)


def read_model(directory: Path) -> RepositoryModel:
    config_file = directory / "config.pbtxt"
    config = parse_model_config(config_file.read_text(), str(config_file))
    if config.name and config.name != directory.name:
        raise LaunchError(f"{config_file}: name {config.name!r} differs from its directory {directory.name!r}")
    buckets: tuple[float, ...] | None = None
    for control in config.model_metrics.metric_control:
        if control.metric_identifier.family == "nv_inference_first_response_histogram_ms":
            if not control.histogram_options.buckets:
                raise LaunchError(f"{config_file}: empty histogram buckets (Triton rejects them)")
            buckets = tuple(control.histogram_options.buckets)
    llm_args = None
    model_yaml = directory / "1" / "model.yaml"
    if model_yaml.exists():
        llm_args = yaml.safe_load(model_yaml.read_text()) or {}
    return RepositoryModel(
        name=directory.name, backend=config.backend, platform=config.platform,
        max_batch_size=config.max_batch_size, decoupled=config.model_transaction_policy.decoupled,
        first_response_buckets=buckets, inputs=tuple(i.name for i in config.input),
        parameters={k: v.string_value for k, v in config.parameters.items()}, llm_args=llm_args,
        steps=tuple(step.model_name for step in config.ensemble_scheduling.step),
        outputs=tuple(o.name for o in config.output))


def _read_repository(repository: str, root: Path | None) -> tuple[Path, tuple[RepositoryModel, ...]]:
    local = _local(root, repository)
    if not local.is_dir():
        raise LaunchError(f"model repository {repository} does not exist (has the prepare step run?)")
    models = tuple(read_model(d) for d in sorted(local.iterdir()) if (d / "config.pbtxt").exists())
    if not models:
        raise LaunchError(f"model repository {repository} holds no model")
    # An ensemble streams when a model it composes is decoupled (Triton's ensemble scheduler).
    decoupled = {m.name for m in models if m.decoupled}
    models = tuple(dataclasses.replace(m, decoupled=True) if set(m.steps) & decoupled else m for m in models)
    for model in models:
        missing = [s for s in model.steps if s not in {m.name for m in models}]
        if missing:
            raise LaunchError(f"ensemble {model.name} composes {missing}, which the repository lacks")
    return local, models


def _read_engine(root: Path | None, env: dict[str, str]) -> dict[str, Any]:
    engine_path = env.get(ENGINE_CONFIG_ENV, DEFAULT_ENGINE_CONFIG)
    engine_file = _local(root, engine_path)
    if not engine_file.exists():
        raise LaunchError(f"{engine_path} (engine.json of the ConfigMap) is missing")
    engine: dict[str, Any] = json.loads(engine_file.read_text())
    return engine


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _ArgumentError(message)


def _openai_parser() -> argparse.ArgumentParser:
    """main.py's arguments (server:python/openai/openai_frontend/main.py@7e31829e, parse_args): an
    argument it lacks makes it exit, so the twin refuses it too."""
    parser = _Parser(prog="main.py", add_help=False)
    parser.add_argument("--model-repository", required=True)
    for name in ("--tokenizer", "--backend", "--lora-separator", "--tool-call-parser", "--chat-template",
                 "--uvicorn-log-level"):
        parser.add_argument(name, default=None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--tritonserver-log-verbose-level", type=int, default=0)
    parser.add_argument("--default-max-tokens", type=int, default=16)
    parser.add_argument("--openai-port", type=int, default=9000)
    parser.add_argument("--openai-restricted-api", nargs=3, action="append", default=None)
    parser.add_argument("--enable-kserve-frontends", action="store_true")
    parser.add_argument("--kserve-http-port", type=int, default=8000)
    parser.add_argument("--kserve-grpc-port", type=int, default=8001)
    return parser


def read_openai_launch(argv: list[str], root: Path | None, env: dict[str, str]) -> Launch:
    """The OpenAI frontend's command line. Its in-process server is ``tritonserver.Server(model_repository,
    log_*)`` with every other option at the Python API's default (main.py@7e31829e; core
    python/tritonserver/_api/_server.py@ab8e8374): metrics, GPU and CPU metrics on, no metrics
    configuration, so no latency histograms (core: latency_histograms_enabled_ false unless
    histogram_latencies=true), and no metrics listener: /metrics is on the OpenAI port."""
    script = next(i for i, a in enumerate(argv) if _is_openai_main(a))
    try:
        args = _openai_parser().parse_args(argv[script + 1:])
    except _ArgumentError as error:
        raise LaunchError(f"main.py: {error}") from error
    local, models = _read_repository(args.model_repository, root)
    engine = _read_engine(root, env)
    gpus = int(engine["tensorParallelSize"]) * int(engine["pipelineParallelSize"])
    if gpus > 1 and any(m.backend == "tensorrtllm" for m in models) and env.get("TRTLLM_ORCHESTRATOR") != "1":
        # One process cannot be the tp x pp ranks of leader mode [inference from the backend's README].
        raise LaunchError(f"the tensorrtllm backend in one process needs TRTLLM_ORCHESTRATOR=1 (orchestrator "
                          f"mode) for an engine of {gpus} GPUs; leader mode wants one tritonserver rank per GPU")
    return Launch(
        repository=local, http_port=args.kserve_http_port if args.enable_kserve_frontends else 0,
        grpc_port=args.kserve_grpc_port if args.enable_kserve_frontends else 0, metrics_port=0,
        world_size=1, allow_metrics=True, histograms=False, gpu_metrics=True, cpu_metrics=True,
        models=models, engine=engine, frontend="openai", openai_port=args.openai_port,
        kserve=args.enable_kserve_frontends, tokenizer=args.tokenizer, default_max_tokens=args.default_max_tokens)


def _is_openai_main(arg: str) -> bool:
    return arg.endswith("openai_frontend/main.py")


def read_launch(argv: list[str], root: Path | None = None, env: dict[str, str] | None = None) -> Launch:
    """Read a Triton container's command line; absolute paths are looked up under ``root``."""
    environment = dict(os.environ if env is None else env)
    if any(_is_openai_main(a) for a in argv):
        return read_openai_launch(argv, root, environment)
    ranks = _ranks(argv)
    first = ranks[0]
    repository = _flag(first, "--model-repository")
    if repository is None:
        raise LaunchError("tritonserver has no --model-repository")
    for rank in ranks[1:]:
        if _flag(rank, "--model-repository") != repository:
            raise LaunchError("every rank must serve the same --model-repository")
    local, models = _read_repository(repository, root)
    engine = _read_engine(root, environment)
    metrics_config = [a.split("=", 1)[1] for a in first if a.startswith("--metrics-config=")]
    return Launch(
        repository=local,
        http_port=int(_flag(first, "--http-port") or 8000),
        grpc_port=int(_flag(first, "--grpc-port") or 8001),
        metrics_port=int(_flag(first, "--metrics-port") or 8002),
        world_size=len(ranks),
        allow_metrics=(_flag(first, "--allow-metrics") or "true") == "true",
        histograms="histogram_latencies=true" in metrics_config,
        gpu_metrics=(_flag(first, "--allow-gpu-metrics") or "true") == "true",
        cpu_metrics=(_flag(first, "--allow-cpu-metrics") or "true") == "true",
        models=models, engine=engine,
    )


# Stand-ins for the image's tools, so the twin runs the operator's real prepare script. The hub's
# failures print what the Hugging Face CLI prints (huggingface_hub cli/_errors.py), chosen by
# TOKENWORKS_FAKE_HUB: gated, missing-repository, missing-revision, full.
FAKE_TOOLS = {
    "hf": """#!/bin/bash
case "${TOKENWORKS_FAKE_HUB:-ok}" in
  gated) echo "Access denied. This repository requires approval." >&2; exit 1 ;;
  missing-repository) echo "Repository not found. Check the repo_id and repo_type parameters." >&2; exit 1 ;;
  missing-revision) echo "Revision not found. Check the revision parameter." >&2; exit 1 ;;
  full) echo "OSError: [Errno 28] No space left on device" >&2; exit 1 ;;
esac
while [ $# -gt 0 ]; do [ "$1" = --local-dir ] && dir="$2"; shift; done
mkdir -p "$dir" && echo '{"architectures": ["LlamaForCausalLM"]}' > "$dir/config.json"
""",
    "ngc": """#!/bin/bash
while [ $# -gt 0 ]; do [ "$1" = --dest ] && dir="$2"; shift; done
mkdir -p "$dir/model_v1" && echo '{}' > "$dir/model_v1/config.json"
""",
    "trtllm-build": """#!/bin/bash
all="$*"
while [ $# -gt 0 ]; do [ "$1" = --output_dir ] && dir="$2"; shift; done
mkdir -p "$dir" && printf '{"emulated": true, "build_args": "%s"}\n' "$all" > "$dir/config.json"
""",
}
FAKE_CONVERT = """import sys
out = sys.argv[sys.argv.index("--output_dir") + 1]
import os
os.makedirs(out, exist_ok=True)
"""
STUB_MODEL = "# emulated: NVIDIA's model.py would be copied from the image here\n"


def _fake_image(root: Path) -> dict[str, str]:
    """Write the stand-in tools and backend templates; the environment that points the script at them."""
    tools = root / ".image" / "bin"
    tools.mkdir(parents=True, exist_ok=True)
    for name, text in FAKE_TOOLS.items():
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    (tools / "huggingface-cli").symlink_to("hf") if not (tools / "huggingface-cli").exists() else None
    backend = root / ".image" / "app"
    for relative in ("all_models/llmapi/tensorrt_llm/1/model.py",
                     *(f"all_models/inflight_batcher_llm/{m}/1/model.py"
                       for m in ("preprocessing", "postprocessing", "tensorrt_llm_bls"))):
        (backend / relative).parent.mkdir(parents=True, exist_ok=True)
        (backend / relative).write_text(STUB_MODEL)
    for relative in ("examples/models/core/llama/convert_checkpoint.py", "examples/quantization/quantize.py"):
        (backend / relative).parent.mkdir(parents=True, exist_ok=True)
        (backend / relative).write_text(FAKE_CONVERT)
    return {"PATH": f"{tools}:{os.environ.get('PATH', '/usr/bin:/bin')}", "TOKENWORKS_POD_ROOT": str(root),
            "TOKENWORKS_TRITON_BACKEND_DIR": str(backend), "TOKENWORKS_TERMINATION_LOG": str(root / "termination-log"),
            "TMPDIR": str(root)}


@dataclass(frozen=True)
class Prepared:
    returncode: int
    termination_message: str  # what the kubelet would put in the init container's terminated state
    output: str


def lay_out(root: Path, config_data: dict[str, str], items: list[dict[str, Any]], source_path: str | None = None,
            env: dict[str, str] | None = None) -> Prepared:
    """Lay out a pod's files under ``root`` from its ConfigMap (data and the volume's items, as the
    kubelet mounts them at /etc/tokenworks), then run the prepare script found there, as the init
    container does, against stand-in tools (no weights are fetched, no engine is built)."""
    import subprocess

    mount = root / "etc" / "tokenworks"
    for item in items:
        target = mount / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config_data[item["key"]])
    if source_path is not None:
        (root / "model-source" / source_path.strip("/")).mkdir(parents=True, exist_ok=True)
    run_env = {**os.environ, **_fake_image(root), **(env or {})}
    done = subprocess.run(["bash", str(mount / "prepare.sh")], env=run_env, capture_output=True, text=True,
                          timeout=60, check=False)
    log = root / "termination-log"
    message = log.read_text().strip() if log.exists() else ""
    return Prepared(done.returncode, message, done.stdout + done.stderr)


def materialize(md: ModelDeployment, root: Path, registry: str = "", env: dict[str, str] | None = None,
                ) -> tuple[list[str], Prepared]:
    """What a pod of ``md`` sees, laid out under ``root`` (``lay_out``); returns the Triton container's
    command line and how the prepare step ended."""
    source = md.spec.model.pvc.path if md.spec.model.pvc else None
    prepared = lay_out(root, config_map(md, registry)["data"], config_items(md), source, env)
    return launch_command(md.spec, registry), prepared


def server_env(md: ModelDeployment) -> dict[str, str]:
    """The environment the server container gets from its launch (TRTLLM_ORCHESTRATOR with the OpenAI
    frontend), for a twin started from ``materialize``."""
    return launch_env(md.spec)
