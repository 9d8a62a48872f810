"""HTTP faces of the emulator: Triton's KServe v2 protocol with the generate extension, an
OpenAI-compatible API, and Prometheus metrics on their own port.

Prompt length in tokens is the number of whitespace-separated words of the text, so a load generator
controls it exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from inference_pods.emulator.engine import Draining, EmulatedEngine, QueueFull, Request
from inference_pods.emulator.metrics import EmulatorMetrics
from inference_pods.performance import ReplicaModel

log = logging.getLogger("tokenworks.emulator")


@dataclass(frozen=True)
class EmulatorConfig:
    model_name: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 0
    metrics_port: int = 8002
    time_scale: float = 1.0
    seed: int = 0
    load_seconds: float | None = None  # default: the performance model's engine load time
    max_queue: int = 1024
    max_input_length: int = 8192
    max_output_length: int = 4096


class ApiError(Exception):
    def __init__(self, status: int, message: str, openai_type: str = "invalid_request_error",
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.openai_type = openai_type
        self.reason = reason  # nv_inference_request_failure reason, when the failure counts


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


class Emulator:
    def __init__(self, replica: ReplicaModel, config: EmulatorConfig) -> None:
        self.replica = replica
        self.config = config
        self.engine = EmulatedEngine(replica, time_scale=config.time_scale, seed=config.seed,
                                     max_queue=config.max_queue)
        self.metrics = EmulatorMetrics(self.engine, config.model_name, replica.gpus)
        self.started = time.monotonic()
        load = replica.load_seconds() if config.load_seconds is None else config.load_seconds
        self.ready_after = load / config.time_scale
        self.runners: list[web.AppRunner] = []
        self.grpc_server: Any = None

    # -- state -----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return time.monotonic() - self.started >= self.ready_after

    @property
    def ready(self) -> bool:
        return self.loaded and not self.engine.draining and self.engine.alive

    # -- request handling shared by every protocol ---------------------------------------------
    def check_model(self, name: str) -> None:
        if name != self.config.model_name:
            raise ApiError(404, f"Request for unknown model: '{name}' is not found", "model_not_found")

    def submit(self, text: str, max_tokens: Any) -> Request:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ApiError(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_tokens > self.config.max_output_length:
            raise ApiError(400, f"max_tokens {max_tokens} exceeds the engine's max output length "
                           f"{self.config.max_output_length}")
        if not self.ready:
            raise ApiError(503, "the model is not ready (loading or shutting down)", "server_error",
                           reason="REJECTED")
        prompt = count_tokens(text)
        if prompt > self.config.max_input_length:
            self.metrics.fail("REJECTED")
            raise ApiError(400, f"prompt of {prompt} tokens exceeds the engine's max input length "
                           f"{self.config.max_input_length}")
        try:
            return self.engine.submit(prompt, max_tokens)
        except QueueFull as error:
            self.metrics.fail("REJECTED")
            raise ApiError(503, str(error), "rate_limit_exceeded") from error
        except Draining as error:
            raise ApiError(503, str(error), "server_error") from error

    async def collect(self, request: Request) -> str:
        return "".join([token async for token in self.engine.stream(request)])

    # -- HTTP ------------------------------------------------------------------------------
    @staticmethod
    async def json_body(http: web.Request) -> dict[str, Any]:
        try:
            body = await http.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, f"malformed JSON: {error}") from error
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    def kserve_errors(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(http: web.Request) -> web.StreamResponse:
            try:
                return await handler(http)
            except ApiError as error:
                status = 400 if error.status == 404 else error.status  # Triton answers 400 here
                return web.json_response({"error": error.message}, status=status)
        return wrapped

    def openai_errors(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(http: web.Request) -> web.StreamResponse:
            try:
                return await handler(http)
            except ApiError as error:
                status = 429 if error.openai_type == "rate_limit_exceeded" else error.status
                return web.json_response({"error": {"message": error.message, "type": error.openai_type,
                                                    "code": status}}, status=status)
        return wrapped

    async def health_live(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self.engine.alive else 500)

    async def health_ready(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready else 503)

    async def model_ready(self, http: web.Request) -> web.Response:
        self.check_model(http.match_info["model"])
        return web.Response(status=200 if self.ready else 503)

    async def model_metadata(self, http: web.Request) -> web.Response:
        self.check_model(http.match_info["model"])
        return web.json_response({
            "name": self.config.model_name, "versions": ["1"], "platform": "ensemble",
            "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [-1, 1]},
                       {"name": "max_tokens", "datatype": "INT32", "shape": [-1, 1]}],
            "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1, 1]}],
        })

    async def infer(self, http: web.Request) -> web.Response:
        """KServe v2 infer with Triton's binary tensor extension (what tritonclient sends by default):
        a JSON header of ``Inference-Header-Content-Length`` bytes, then the tensors' raw bytes."""
        self.check_model(http.match_info["model"])
        raw = await http.read()
        header_length = int(http.headers.get("Inference-Header-Content-Length", len(raw)))
        try:
            body = json.loads(raw[:header_length])
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(400, f"malformed JSON: {error}") from error
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        values: dict[str, Any] = {}
        offset = header_length
        for tensor in body.get("inputs") or []:
            if not isinstance(tensor, dict):
                continue
            size = (tensor.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                chunk, offset = raw[offset: offset + size], offset + size
                if tensor.get("datatype") == "BYTES":
                    (length,) = struct.unpack_from("<I", chunk) if len(chunk) >= 4 else (0,)
                    values[tensor.get("name", "")] = chunk[4: 4 + length].decode(errors="replace")
                elif tensor.get("datatype") in ("INT32", "UINT32") and len(chunk) >= 4:
                    values[tensor.get("name", "")] = struct.unpack_from("<i", chunk)[0]
            else:
                values[tensor.get("name", "")] = _first(tensor.get("data"))
        if "text_input" not in values:
            raise ApiError(400, "expected input 'text_input' (BYTES) is missing")
        request = self.submit(str(values["text_input"]), values.get("max_tokens", 16))
        output = await self.collect(request)
        parameters = body.get("parameters") or {}
        wants_binary = parameters.get("binary_data_output") or any(
            (o.get("parameters") or {}).get("binary_data") for o in body.get("outputs") or [] if isinstance(o, dict))
        result: dict[str, Any] = {"model_name": self.config.model_name, "model_version": "1",
                                  "id": body.get("id", ""),
                                  "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1, 1]}]}
        if not wants_binary:
            result["outputs"][0]["data"] = [output]
            return web.json_response(result)
        tensor_bytes = struct.pack("<I", len(output.encode())) + output.encode()
        result["outputs"][0]["parameters"] = {"binary_data_size": len(tensor_bytes)}
        header = json.dumps(result).encode()
        return web.Response(body=header + tensor_bytes, headers={
            "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})

    async def generate(self, http: web.Request) -> web.Response:
        self.check_model(http.match_info["model"])
        body = await self.json_body(http)
        request = self.submit(str(body.get("text_input", "")), body.get("max_tokens", 16))
        output = await self.collect(request)
        return web.json_response({"model_name": self.config.model_name, "model_version": "1",
                                  "text_output": output})

    async def generate_stream(self, http: web.Request) -> web.StreamResponse:
        self.check_model(http.match_info["model"])
        body = await self.json_body(http)
        request = self.submit(str(body.get("text_input", "")), body.get("max_tokens", 16))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(http)
        async for token in self.engine.stream(request):
            event = {"model_name": self.config.model_name, "model_version": "1", "text_output": token}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
        return response

    async def completions(self, http: web.Request) -> web.StreamResponse:
        body = await self.json_body(http)
        chat = http.path.endswith("/chat/completions")
        self.check_model(str(body.get("model", "")))
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise ApiError(400, "'messages' must be a non-empty list")
            text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        else:
            if "prompt" not in body:
                raise ApiError(400, "'prompt' is required")
            text = str(body["prompt"])
        request = self.submit(text, body.get("max_tokens", 16))
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{request.id}"
        if not body.get("stream"):
            output = await self.collect(request)
            choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": output},
                                       "finish_reason": "length"} if chat else
                                      {"index": 0, "text": output, "finish_reason": "length"})
            return web.json_response({
                "id": ident, "object": kind, "created": created, "model": self.config.model_name,
                "choices": [choice],
                "usage": {"prompt_tokens": request.prompt_tokens, "completion_tokens": request.generated,
                          "total_tokens": request.prompt_tokens + request.generated},
            })
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(http)
        async for token in self.engine.stream(request):
            delta: dict[str, Any] = ({"index": 0, "delta": {"content": token}, "finish_reason": None}
                                     if chat else {"index": 0, "text": token, "finish_reason": None})
            chunk = {"id": ident, "object": f"{kind}.chunk" if chat else kind, "created": created,
                     "model": self.config.model_name, "choices": [delta]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def list_models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.config.model_name, "object": "model", "owned_by": "tokenworks-emulator"}]})

    async def scrape(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def http_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        k, o = self.kserve_errors, self.openai_errors
        app.add_routes([
            web.get("/v2/health/live", self.health_live),
            web.get("/v2/health/ready", self.health_ready),
            web.get("/v2/models/{model}/ready", k(self.model_ready)),
            web.get("/v2/models/{model}/versions/{version}/ready", k(self.model_ready)),
            web.get("/v2/models/{model}", k(self.model_metadata)),
            web.get("/v2/models/{model}/versions/{version}", k(self.model_metadata)),
            web.post("/v2/models/{model}/infer", k(self.infer)),
            web.post("/v2/models/{model}/versions/{version}/infer", k(self.infer)),
            web.post("/v2/models/{model}/generate", k(self.generate)),
            web.post("/v2/models/{model}/generate_stream", k(self.generate_stream)),
            web.post("/v1/completions", o(self.completions)),
            web.post("/v1/chat/completions", o(self.completions)),
            web.get("/v1/models", self.list_models),
        ])
        return app

    def metrics_app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/metrics", self.scrape)])
        return app

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self.engine.start()
        for app, port in ((self.http_app(), self.config.http_port), (self.metrics_app(), self.config.metrics_port)):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, self.config.host, port).start()
            self.runners.append(runner)
        if self.config.grpc_port:
            from inference_pods.emulator.grpc_service import start_grpc

            self.grpc_server = await start_grpc(self, self.config.host, self.config.grpc_port)

    async def shutdown(self) -> None:
        """Drain as Triton does on SIGTERM: refuse new work with 503, finish in-flight, then exit."""
        log.info("draining in_flight=%d", self.engine.in_flight)
        await self.engine.drain()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=1)
        for runner in self.runners:
            await runner.cleanup()
        await self.engine.stop()
        log.info("stopped")


def _first(values: Any) -> Any:
    while isinstance(values, list) and values:
        values = values[0]
    return values


async def serve(replica: ReplicaModel, config: EmulatorConfig) -> None:
    emulator = Emulator(replica, config)
    await emulator.start()
    log.info("serving model=%s http=%s:%d metrics=%d grpc=%d ready_in=%.1fs", config.model_name, config.host,
             config.http_port, config.metrics_port, config.grpc_port, emulator.ready_after)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emulator.shutdown()
