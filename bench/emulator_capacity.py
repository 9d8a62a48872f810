"""Emulator capacity on this machine.

1. Streamed output tokens per second that one emulator process sustains on one core (the process
   pinned to CPU 0, the load generator to CPU 1, generate_stream streaming, the engine sped up so that the
   HTTP path, not the modelled GPU, is the limit).
2. The CPU share of each emulated replica at a realistic load: N replicas (Llama-3.1-8B on H100, real
   time), each replaying the busiest minute of the Azure conv trace (8.45 req/s, its real prompt and
   output lengths) as streaming generate_stream requests.

    .venv/bin/python bench/emulator_capacity.py [--replicas 8] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import os
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.emulator import EmulatorProcess

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
MODEL = "tensorrt_llm"  # the llmapi repository's one model
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def peak_minute() -> list[tuple[float, int, int]]:
    """(offset seconds, prompt tokens, output tokens) of the trace's busiest 1-minute bin."""
    rows = []
    with TRACE.open() as handle:
        for row in csv.DictReader(handle):
            stamp = dt.datetime.strptime(row["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f")
            rows.append((stamp.timestamp(), int(row["ContextTokens"]), int(row["GeneratedTokens"])))
    first = rows[0][0]
    bins = Counter(int((t - first) // 60) for t, _, _ in rows)
    busiest, _ = bins.most_common(1)[0]
    start = first + busiest * 60
    return [(t - start, i, o) for t, i, o in rows if busiest == int((t - first) // 60)]


async def stream_one(session: aiohttp.ClientSession, url: str, prompt: int, output: int) -> int:
    body = {"text_input": "w " * prompt, "sampling_param_max_tokens": output, "streaming": True}
    tokens = 0
    async with session.post(f"{url}/v2/models/{MODEL}/generate_stream", json=body) as response:
        async for line in response.content:
            if line.startswith(b"data: {"):
                tokens += 1
    return tokens


async def saturate(url: str, seconds: float, concurrency: int) -> int:
    deadline = time.monotonic() + seconds
    total = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal total
        while time.monotonic() < deadline:
            tokens = await stream_one(session, url, 100, 256)
            total += tokens  # not `total += await ...`: that reads total before the await

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return total


async def replay(urls: list[str], requests: list[tuple[float, int, int]], seconds: float) -> tuple[int, int]:
    started = time.monotonic()
    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for offset, prompt, output in requests:
            if offset > seconds:
                break
            delay = started + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for url in urls:
                tasks.append(asyncio.create_task(stream_one(session, url, min(prompt, 8000), output)))
        results = await asyncio.gather(*tasks)
    return len(results), sum(results)


def pin(pid: int, cpu: int) -> None:
    os.sched_setaffinity(pid, {cpu})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()

    # 1. One process, one core.
    single = EmulatorProcess(["--load-seconds=0", "--time-scale=1000", "--max-batch-size=512",
                              "--grpc-port=0"]).start()
    assert single.process is not None
    pin(single.process.pid, 0)
    pin(os.getpid(), 1)
    cpu_before = cpu_seconds(single.process.pid)
    began = time.monotonic()
    tokens = asyncio.run(saturate(single.url, 20, 64))
    elapsed = time.monotonic() - began
    busy = cpu_seconds(single.process.pid) - cpu_before
    single.stop()
    print(f"one process, one core: {tokens / elapsed:,.0f} streamed tokens/s "
          f"(emulator CPU {100 * busy / elapsed:.0f}% of a core)")

    # 2. N realistic replicas under the conv trace's peak minute each.
    os.sched_setaffinity(os.getpid(), set(range(os.cpu_count() or 1)))
    requests = peak_minute()
    replicas = [EmulatorProcess(["--load-seconds=0", "--model=Llama-3.1-8B", "--gpu=H100-SXM",
                                 "--grpc-port=0"]).start() for _ in range(args.replicas)]
    pids = [r.process.pid for r in replicas if r.process]
    before = [cpu_seconds(p) for p in pids]
    began = time.monotonic()
    sent, streamed = asyncio.run(replay([r.url for r in replicas], requests, args.seconds))
    elapsed = time.monotonic() - began
    shares = [(cpu_seconds(p) - b) / elapsed for p, b in zip(pids, before, strict=True)]
    for replica in replicas:
        replica.stop()
    per_replica = len([r for r in requests if r[0] <= args.seconds]) / args.seconds
    print(f"{args.replicas} replicas x {per_replica:.2f} req/s (conv peak minute, streamed): "
          f"{sent} requests, {streamed:,} tokens in {elapsed:.0f} s")
    print(f"CPU per replica: mean {100 * sum(shares) / len(shares):.1f}% of a core, "
          f"max {100 * max(shares):.1f}%; all {args.replicas}: {100 * sum(shares):.0f}% of 200%")
    loadavg = os.getloadavg()[0]
    print(f"load average (1 min) at the end: {loadavg:.2f}")


if __name__ == "__main__":
    main()
