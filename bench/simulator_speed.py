"""Simulator speed: one hour of the Azure conv trace at 4x its rate (up to 32 replicas), on one core.

    .venv/bin/python bench/simulator_speed.py [--rate 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controllers.simulation.simulator import Simulator, report
from controllers.simulation.trace import load, multiply
from crds.models import ModelDeployment

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=4)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    raw = yaml.safe_load((ROOT / "examples" / "llama-8b-h100.yaml").read_text())
    raw["metadata"]["namespace"] = "default"
    raw["spec"]["engine"]["precision"] = "bf16"
    raw["spec"]["autoscaling"]["maxReplicas"] = 32
    md = ModelDeployment.model_validate(raw)
    requests = multiply(load(TRACE), args.rate)
    started = time.process_time()
    began = time.monotonic()
    result = Simulator(md, requests).run()
    cpu = time.process_time() - started
    wall = time.monotonic() - began
    summary = report(result, 2.0, 0.1, len(requests))
    print(f"{len(requests):,} requests over {result.duration / 60:.0f} simulated minutes, up to "
          f"{summary.max_replicas} replicas: {cpu:.1f} s CPU ({wall:.1f} s wall) on one core")
    print(f"SLO attainment {100 * summary.attainment:.2f}%, {summary.gpu_hours:.2f} GPU-hours, "
          f"{summary.scale_events} scale events")


if __name__ == "__main__":
    main()
