"""Traffic for the factory: a trace replayed against each ModelDeployment's ready pods, routed by least
outstanding work as an endpoint picker does, over Triton's streaming ``generate_stream``; the client
measures time to first token and inter-token latency itself, per request.

Endpoints are found as a gateway's endpoint picker finds them: the pods the ModelDeployment's selector
matches that are Ready and have a pod IP, read from the API server (here every second).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from controllers.simulation.trace import TraceRequest
from inference_pods.repository import REQUEST_SHAPE
from inference_pods.templates import INSTANCE_LABEL

log = logging.getLogger("tokenworks.factory")
WORD_TOKENS = 1  # the emulator counts one token per word (inference_pods/emulator/server.py:count_tokens)


@dataclass(frozen=True)
class Endpoint:
    pod: str
    url: str  # http://<pod IP>:<port>
    protocol: str = "triton"  # "openai" where the pod runs Triton's OpenAI frontend (its `openai` port)


def ready_endpoints(pods: list[dict[str, Any]]) -> list[Endpoint]:
    """Pods Ready with an IP, not being deleted, in a stable order."""
    found = []
    for pod in pods:
        status = pod.get("status") or {}
        meta = pod.get("metadata") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if not ready or not status.get("podIP") or meta.get("deletionTimestamp"):
            continue
        ports = {p.get("name"): p.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or []
                 for p in c.get("ports") or []}
        # A pod with the OpenAI frontend is asked as its users ask it, on the OpenAI port.
        if ports.get("openai"):
            found.append(Endpoint(meta["name"], f"http://{status['podIP']}:{ports['openai']}", "openai"))
        elif ports.get("http"):
            found.append(Endpoint(meta["name"], f"http://{status['podIP']}:{ports['http']}"))
    return sorted(found, key=lambda e: e.pod)


@dataclass
class Result:
    deployment: str
    sent_at: float  # seconds since the replay started
    input_tokens: int
    output_tokens: int  # asked for
    received: int = 0
    ttft: float | None = None
    itl: float | None = None  # mean gap between tokens after the first
    error: str | None = None
    endpoint: str = ""


class Router:
    """Least outstanding work: the endpoint with the fewest tokens still to produce and to read, as the
    endpoint picker's queue-and-KV scoring approximates it. Thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.endpoints: list[Endpoint] = []
        self.outstanding: dict[str, float] = {}

    def set_endpoints(self, endpoints: list[Endpoint]) -> None:
        with self.lock:
            self.endpoints = endpoints
            for e in endpoints:
                self.outstanding.setdefault(e.url, 0.0)

    def pick(self, work: float) -> Endpoint | None:
        with self.lock:
            if not self.endpoints:
                return None
            chosen = min(self.endpoints, key=lambda e: (self.outstanding.get(e.url, 0.0), e.pod))
            self.outstanding[chosen.url] = self.outstanding.get(chosen.url, 0.0) + work
            return chosen

    def done(self, endpoint: Endpoint, work: float) -> None:
        with self.lock:
            self.outstanding[endpoint.url] = max(0.0, self.outstanding.get(endpoint.url, 0.0) - work)


@dataclass
class Stats:
    """Client-side figures over a sliding window, for the live view."""

    window: float = 30.0
    results: list[Result] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, result: Result) -> None:
        with self.lock:
            self.results.append(result)

    def recent(self, now: float) -> list[Result]:
        with self.lock:
            return [r for r in self.results if r.sent_at >= now - self.window]

    def all(self) -> list[Result]:
        with self.lock:
            return list(self.results)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def stream_one(session: aiohttp.ClientSession, endpoint: Endpoint, backend: str, request: TraceRequest,
                     result: Result, timeout: float) -> None:
    """One streamed request; TTFT and ITL as the client sees them (the network included). aiohttp, not
    httpx: on the 2-core machine the client must stay far from the pods' pace (it streams every token)."""
    model, limit, stream = REQUEST_SHAPE[backend]
    prompt = "w " * max(1, request.input_tokens // WORD_TOKENS)
    if endpoint.protocol == "openai":
        # The engine path's client-facing model, as the OpenAI frontend serves it.
        path, body = "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": request.output_tokens,
                                         "stream": True}
    else:
        path, body = f"/v2/models/{model}/generate_stream", {"text_input": prompt, limit: request.output_tokens,
                                                             stream: True}
    started = time.monotonic()
    last = started
    gaps: list[float] = []
    try:
        async with session.post(f"{endpoint.url}{path}", json=body,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                result.error = f"HTTP {response.status}"
                return
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                now = time.monotonic()
                if result.ttft is None:
                    result.ttft = now - started
                else:
                    gaps.append(now - last)
                last = now
                result.received += 1
    except (aiohttp.ClientError, TimeoutError) as error:
        result.error = f"{type(error).__name__}: {error}"
    finally:
        result.itl = sum(gaps) / len(gaps) if gaps else None


class Replayer:
    """Replays ``requests`` (arrival seconds from 0) against one deployment, open loop: a request is sent
    at its arrival time whether or not earlier ones have finished, as real users send them."""

    def __init__(self, deployment: str, backend: str, requests: list[TraceRequest], router: Router, stats: Stats,
                 timeout: float = 120.0) -> None:
        self.deployment, self.backend, self.requests = deployment, backend, requests
        self.router, self.stats, self.timeout = router, stats, timeout
        self.unrouted = 0

    async def run(self, started: float, stop: Callable[[], bool]) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
            tasks: set[asyncio.Task[None]] = set()
            for request in self.requests:
                delay = started + request.arrival - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if stop():
                    break
                result = Result(self.deployment, request.arrival, request.input_tokens, request.output_tokens)
                work = float(request.input_tokens + request.output_tokens)
                endpoint = self.router.pick(work)
                if endpoint is None:
                    # No ready pod (scaled to zero, all loading): the request fails as it would at a gateway
                    # with no endpoint, and counts against the SLO.
                    self.unrouted += 1
                    result.error = "no ready endpoint"
                    self.stats.add(result)
                    continue
                result.endpoint = endpoint.pod
                task = asyncio.create_task(self._send(client, endpoint, request, result, work))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self.timeout)
                for task in pending:  # past their timeout: ended here, not left to a closing session
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _send(self, client: aiohttp.ClientSession, endpoint: Endpoint, request: TraceRequest, result: Result,
                    work: float) -> None:
        try:
            await stream_one(client, endpoint, self.backend, request, result, self.timeout)
        finally:
            self.router.done(endpoint, work)
            self.stats.add(result)


class EndpointWatcher:
    """Keeps each router's endpoints current from the API server, once a second."""

    def __init__(self, list_pods: Callable[[str, str], list[dict[str, Any]]],
                 routers: dict[tuple[str, str], Router], period: float = 1.0) -> None:
        self.list_pods, self.routers, self.period = list_pods, routers, period
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="endpoints")

    def refresh(self) -> None:
        for (namespace, name), router in self.routers.items():
            router.set_endpoints(ready_endpoints(self.list_pods(namespace, f"{INSTANCE_LABEL}={name}")))

    def _run(self) -> None:
        said: set[str] = set()
        while not self.stopping.wait(self.period):
            try:
                self.refresh()
            except Exception as error:  # the API server restarting: keep the last endpoints, say why once
                if (text := f"{type(error).__name__}: {error}") not in said:
                    said.add(text)
                    log.warning("listing endpoints failed: %s", text)

    def start(self) -> EndpointWatcher:
        self.refresh()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(2)
