"""`python -m inference_pods.emulator`: one emulated Triton + TensorRT-LLM replica."""

from __future__ import annotations

import argparse
import asyncio
import logging

from inference_pods.emulator.server import EmulatorConfig, serve
from inference_pods.performance import ReplicaModel
from inference_pods.profiles import GPUS, MODELS


def parse(argv: list[str] | None = None) -> tuple[ReplicaModel, EmulatorConfig]:
    parser = argparse.ArgumentParser(prog="python -m inference_pods.emulator", description=__doc__)
    parser.add_argument("--model", default="Llama-3.1-8B", choices=sorted(MODELS))
    parser.add_argument("--gpu", default="H100-SXM", choices=sorted(GPUS))
    parser.add_argument("--precision", default="bf16", choices=["fp8", "bf16", "fp16"])
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--max-num-tokens", type=int, default=8192)
    parser.add_argument("--model-name", default=None, help="name clients use (default: the profile, lowercased)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001, help="0 disables gRPC")
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--time-scale", type=float, default=1.0, help="run this many times faster than a GPU")
    parser.add_argument("--load-seconds", type=float, default=None, help="engine load time (default: modelled)")
    parser.add_argument("--max-queue", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    replica = ReplicaModel.for_profiles(args.model, args.gpu, precision=args.precision, tp=args.tp, pp=args.pp,
                                        max_batch_size=args.max_batch_size, max_num_tokens=args.max_num_tokens)
    config = EmulatorConfig(
        model_name=args.model_name or args.model.lower().replace(".", "-"), host=args.host,
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
        time_scale=args.time_scale, seed=args.seed, load_seconds=args.load_seconds, max_queue=args.max_queue,
    )
    return replica, config


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s logger=%(name)s msg=\"%(message)s\"")
    replica, config = parse(argv)
    asyncio.run(serve(replica, config))


if __name__ == "__main__":
    main()
