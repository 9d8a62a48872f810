"""`python -m inference_pods.emulator`: one emulated Triton + TensorRT-LLM replica, started as the pod is.

Twin mode (what tests and the factory use): the Triton container's own command line after ``--``,
with ``--root`` where the pod's files lie (``inference_pods.emulator.pod.materialize`` writes them):

    python -m inference_pods.emulator --root /tmp/pod -- mpirun --allow-run-as-root -n 1 tritonserver ...

Quick mode (no command line): the flags describe a ModelDeployment, which is rendered and materialized
into a temporary root, then started exactly as in twin mode.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from crds.models import ModelDeployment
from inference_pods.emulator.pod import Launch, materialize, read_launch
from inference_pods.emulator.server import EmulatorConfig, serve
from inference_pods.profiles import GPUS, MODELS


def quick_deployment(args: argparse.Namespace) -> ModelDeployment:
    source = {"pvc": {"claimName": "weights"}}
    return ModelDeployment.model_validate({
        "metadata": {"name": "emulated", "namespace": "default", "uid": "emulated"},
        "spec": {
            "model": {"name": args.model.lower().replace(".", "-"), "profile": args.model, **source},
            "engine": {"backend": args.backend, "precision": args.precision, "maxBatchSize": args.max_batch_size,
                       "maxNumTokens": args.max_num_tokens},
            "parallelism": {"tensor": args.tp, "pipeline": args.pp},
            "gpu": {"product": args.gpu},
            "ports": {"http": args.http_port, "grpc": args.grpc_port or 8001, "metrics": args.metrics_port},
            "autoscaling": {"slo": {"ttftMilliseconds": args.ttft_ms}},
        },
    })


def parse(argv: list[str] | None = None) -> tuple[Launch, EmulatorConfig]:
    parser = argparse.ArgumentParser(prog="python -m inference_pods.emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="where the pod's files lie (twin mode)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--time-scale", type=float, default=1.0, help="run this many times faster than a GPU")
    parser.add_argument("--load-seconds", type=float, default=None, help="engine load time (default: modelled)")
    parser.add_argument("--max-queue", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    quick = parser.add_argument_group("quick mode (no command line given)")
    quick.add_argument("--model", default="Llama-3.1-8B", choices=sorted(MODELS))
    quick.add_argument("--gpu", default="H100-SXM", choices=sorted(GPUS))
    quick.add_argument("--backend", default="llmapi", choices=["llmapi", "tensorrt-engine"])
    quick.add_argument("--precision", default="bf16", choices=["fp8", "bf16", "fp16"])
    quick.add_argument("--tp", type=int, default=1)
    quick.add_argument("--pp", type=int, default=1)
    quick.add_argument("--max-batch-size", type=int, default=256)
    quick.add_argument("--max-num-tokens", type=int, default=8192)
    quick.add_argument("--ttft-ms", type=int, default=2000, help="SLO the TTFT histogram buckets bracket")
    quick.add_argument("--http-port", type=int, default=8000)
    quick.add_argument("--grpc-port", type=int, default=8001, help="0 disables gRPC")
    quick.add_argument("--metrics-port", type=int, default=8002)
    args, command = parser.parse_known_args(argv)
    if command and command[0] == "--":
        command = command[1:]
    config = EmulatorConfig(host=args.host, time_scale=args.time_scale, seed=args.seed,
                            load_seconds=args.load_seconds, max_queue=args.max_queue)
    if command:
        return read_launch(command, args.root), config
    root = Path(tempfile.mkdtemp(prefix="tokenworks-pod-"))
    command, prepared = materialize(quick_deployment(args), root)
    if prepared.returncode:
        parser.error(f"the prepare step failed: {prepared.termination_message or prepared.output}")
    launch = read_launch(command, root)
    if not args.grpc_port:
        launch = Launch(**{**launch.__dict__, "grpc_port": 0})
    return launch, config


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s logger=%(name)s msg=\"%(message)s\"")
    launch, config = parse(argv)
    asyncio.run(serve(launch, config))


if __name__ == "__main__":
    main()
