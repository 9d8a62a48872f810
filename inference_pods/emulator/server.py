"""HTTP faces of the emulator: what ``tritonserver`` serves for the pod's model repository, Triton's
KServe v2 protocol with the generate extensions, and Prometheus metrics on their own port; or, when the
pod runs Triton's OpenAI frontend, its routes on the OpenAI port (``/v1/models``, ``/v1/completions``,
``/v1/chat/completions``, ``/health/ready``, ``/metrics``) with the KServe frontends beside them.

Decoupled models (every streaming LLM model) answer as Triton does: HTTP ``infer`` and gRPC
``ModelInfer`` refuse them, ``generate_stream`` and gRPC ``ModelStreamInfer`` stream. The request
inputs are those of the served model: ``sampling_param_max_tokens`` and ``streaming`` on the LLM-API
``tensorrt_llm`` model, ``max_tokens`` and ``stream`` on the engine path's ``ensemble`` and BLS.

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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from crds.architecture import Architecture
from inference_pods.emulator.engine import Draining, EmulatedEngine, QueueFull, Request
from inference_pods.emulator.metrics import PodMetrics
from inference_pods.emulator.pod import Launch
from inference_pods.performance import ReplicaModel
from inference_pods.profiles import GPUS, MODELS, ModelProfile
from inference_pods.repository import TRTLLM_MODEL

log = logging.getLogger("tokenworks.emulator")


@dataclass(frozen=True)
class EmulatorConfig:
    """How the twin runs; what it serves comes from the pod's ``Launch``."""

    host: str = "127.0.0.1"
    time_scale: float = 1.0
    seed: int = 0
    load_seconds: float | None = None  # default: the performance model's engine load time
    max_queue: int = 1024


def replica_for(launch: Launch) -> ReplicaModel:
    """The performance model of the pod's replica: hardware and weights from engine.json, the engine's
    limits from what the server itself reads (model.yaml on the LLM-API path)."""
    engine = launch.engine
    model = launch.model(TRTLLM_MODEL)
    args = (model.llm_args if model else None) or {}
    # The C++ backend's batch limit is the tensorrt_llm model's max_batch_size (the LLM-API model has
    # 0 there: Triton does not batch it, model.yaml says what the LLM API does).
    batch = model.max_batch_size if model and model.max_batch_size > 0 else args.get("max_batch_size")
    # The architecture travels in engine.json (a catalogue profile's too), so any model the API takes runs.
    shape = engine["model"].get("architecture")
    profile = ModelProfile(engine["model"]["profile"], Architecture.model_validate(shape)) if shape \
        else MODELS[engine["model"]["profile"]]
    return ReplicaModel(
        profile, GPUS[engine["gpu"]], precision=engine["precision"],
        tp=int(args.get("tensor_parallel_size", engine["tensorParallelSize"])),
        pp=int(args.get("pipeline_parallel_size", engine["pipelineParallelSize"])),
        max_batch_size=int(batch or engine["maxBatchSize"]),
        max_num_tokens=int(args.get("max_num_tokens", engine["maxNumTokens"])),
        # Expert parallelism, attention DP and the KV type change the step cost as ReplicaModel.for_spec has
        # them (older engine.json files lack them: the defaults).
        ep=int(args.get("moe_expert_parallel_size", engine.get("expertParallelSize", 1))),
        attention_dp=bool(args.get("enable_attention_dp", engine.get("attentionDataParallel", False))),
        kv_precision=str(engine.get("kvCachePrecision", "auto")))


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


DEFAULT_LLMAPI_MAX_TOKENS = 32  # the LLM API's SamplingParams default


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


class Emulator:
    def __init__(self, launch: Launch, config: EmulatorConfig | None = None) -> None:
        self.launch = launch
        self.config = config = config or EmulatorConfig()
        self.replica = replica = replica_for(launch)
        self.engine = EmulatedEngine(replica, time_scale=config.time_scale, seed=config.seed,
                                     max_queue=config.max_queue)
        load = replica.load_seconds() if config.load_seconds is None else config.load_seconds
        self.metrics = PodMetrics(self.engine, launch.exposition(replica.gpus), load)
        self.max_input_length = int(launch.engine["maxInputLength"])
        self.max_output_length = int(launch.engine["maxOutputLength"])
        self.started = time.monotonic()
        self.created = time.time()  # the OpenAI models' `created`
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
        if self.launch.model(name) is None:
            raise ApiError(404, f"Request for unknown model: '{name}' is not found")

    def decoupled(self, name: str) -> bool:
        model = self.launch.model(name)
        return model is not None and model.decoupled

    def inputs(self, name: str) -> tuple[str, str]:
        """(max-tokens input, streaming input) of a served model."""
        return ("sampling_param_max_tokens", "streaming") if name == TRTLLM_MODEL else ("max_tokens", "stream")

    def streaming(self, name: str, values: dict[str, Any]) -> bool:
        """Whether the request asks for a response per token (both models default to one response);
        only a decoupled model can stream."""
        _, key = self.inputs(name)
        wanted = bool(values.get(key, False))
        if wanted and not self.decoupled(name):
            raise ApiError(400, "Streaming is only supported in decoupled mode.")
        return wanted

    def max_tokens(self, name: str, values: dict[str, Any]) -> Any:
        key, _ = self.inputs(name)
        if key not in values:
            if name == TRTLLM_MODEL:
                return DEFAULT_LLMAPI_MAX_TOKENS
            raise ApiError(400, f"expected input '{key}' is missing")
        return values[key]

    def submit(self, model: str, text: str, max_tokens: Any, stream: bool = False) -> Request:
        if model not in self.launch.served:
            raise ApiError(400, f"model '{model}' takes token ids, not text; send requests to "
                           f"{' or '.join(self.launch.served)}")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ApiError(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_tokens > self.max_output_length:
            raise ApiError(400, f"max_tokens {max_tokens} exceeds the engine's max output length "
                           f"{self.max_output_length}")
        if not self.ready:
            raise ApiError(503, "the model is not ready (loading or shutting down)")
        prompt = count_tokens(text)
        if prompt > self.max_input_length:
            self.metrics.fail(model, "BACKEND")
            raise ApiError(400, f"prompt of {prompt} tokens exceeds the engine's max input length "
                           f"{self.max_input_length}")
        try:
            request = self.engine.submit(prompt, max_tokens)
        except QueueFull as error:
            self.metrics.fail(model, "REJECTED")
            raise ApiError(503, str(error)) from error
        except Draining as error:
            raise ApiError(503, str(error)) from error
        self.metrics.started(request, model, stream)
        return request

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

    async def health_live(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self.engine.alive else 500)

    async def health_ready(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready else 503)

    async def model_ready(self, http: web.Request) -> web.Response:
        self.check_model(http.match_info["model"])
        return web.Response(status=200 if self.ready else 503)

    async def model_metadata(self, http: web.Request) -> web.Response:
        name = http.match_info["model"]
        self.check_model(name)
        model = self.launch.model(name)
        assert model is not None
        return web.json_response({
            "name": name, "versions": ["1"], "platform": model.platform or model.backend,
            "inputs": [{"name": i, "datatype": "BYTES" if i == "text_input" else "INT32", "shape": [-1]}
                       for i in model.inputs],
            "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}],
        })

    async def infer(self, http: web.Request) -> web.Response:
        """KServe v2 infer with Triton's binary tensor extension (what tritonclient sends by default):
        a JSON header of ``Inference-Header-Content-Length`` bytes, then the tensors' raw bytes."""
        name = http.match_info["model"]
        self.check_model(name)
        if self.decoupled(name):
            raise ApiError(400, "HTTP end point doesn't support models with decoupled transaction policy")
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
        request = self.submit(name, str(values["text_input"]), self.max_tokens(name, values),
                              self.streaming(name, values))
        output = await self.collect(request)
        parameters = body.get("parameters") or {}
        wants_binary = parameters.get("binary_data_output") or any(
            (o.get("parameters") or {}).get("binary_data") for o in body.get("outputs") or [] if isinstance(o, dict))
        result: dict[str, Any] = {"model_name": name, "model_version": "1",
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
        name = http.match_info["model"]
        self.check_model(name)
        if self.decoupled(name):
            # triton-inference-server/server docs/getting_started/llm.md: a decoupled model answers the
            # non-streaming endpoint with 501.
            raise ApiError(501, "the model is decoupled: use generate_stream")
        body = await self.json_body(http)
        request = self.submit(name, str(body.get("text_input", "")), self.max_tokens(name, body),
                              self.streaming(name, body))
        output = await self.collect(request)
        return web.json_response({"model_name": name, "model_version": "1", "text_output": output})

    async def generate_stream(self, http: web.Request) -> web.StreamResponse:
        name = http.match_info["model"]
        self.check_model(name)
        body = await self.json_body(http)
        stream = self.streaming(name, body)
        request = self.submit(name, str(body.get("text_input", "")), self.max_tokens(name, body), stream)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache"})
        await response.prepare(http)
        # Not streaming: the model sends one response with the whole text.
        chunks = self.engine.stream(request) if stream else _once(self.collect(request))
        async for text in chunks:
            event = {"model_name": name, "model_version": "1", "text_output": text}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
        return response

    async def scrape(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- the OpenAI frontend (server:python/openai/openai_frontend@6297a6be) ----------------------------
    # Errors are FastAPI's HTTPException bodies, {"detail": ...}: the engine's ClientError is 400, anything
    # from Triton itself (a refused input, an engine error) 500 (routers/completions.py, chat.py).
    def openai_errors(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(http: web.Request) -> web.StreamResponse:
            try:
                return await handler(http)
            except ApiError as error:
                return web.json_response({"detail": error.message}, status=error.status)
        return wrapped

    def openai_model(self, name: Any) -> str:
        """The Triton model a request names, checked as TritonLLMEngine._validate_*_request does."""
        if not isinstance(name, str) or self.launch.model(name) is None:
            raise ApiError(400, f"Unknown model: {name}")
        return name

    def triton_inputs(self, name: str, body: dict[str, Any]) -> None:
        """The inputs _create_trtllm_generate_request sends (engine/utils/triton.py@6297a6be): Triton
        refuses a request naming an input its model does not declare (core src/model.cc, GetInput), and the
        frontend answers that with 500."""
        sent = ["text_input", "stream", "max_tokens", "return_num_input_tokens", "return_num_output_tokens"]
        sent += [tensor for key, tensor in (("stop", "stop_words"), ("top_p", "top_p"),
                                            ("frequency_penalty", "frequency_penalty"),
                                            ("presence_penalty", "presence_penalty"), ("seed", "seed"),
                                            ("temperature", "temperature")) if body.get(key) is not None]
        model = self.launch.model(name)
        assert model is not None
        for tensor in sent:
            if tensor not in model.inputs:
                raise ApiError(500, f"unexpected inference input '{tensor}' for model '{name}'")

    def openai_submit(self, name: str, text: str, body: dict[str, Any], max_tokens: Any) -> Request:
        stream = bool(body.get("stream"))
        if body.get("stream_options") and not stream:
            raise ApiError(400, "`stream_options` can only be used when `stream` is True")
        if (body.get("n") or 1) > 1:
            raise ApiError(400, f"Received n={body['n']}, but only single choice (n=1) is currently supported")
        self.triton_inputs(name, body)
        if stream and not self.decoupled(name):
            raise ApiError(500, "Streaming is only supported in decoupled mode.")
        try:
            return self.submit(name, text, max_tokens, stream)
        except ApiError as error:
            raise ApiError(500, error.message) from error  # Triton's errors reach the client as 500

    def usage(self, name: str, request: Request) -> dict[str, int] | None:
        """``usage`` exists when the model returns num_input_tokens and num_output_tokens
        (_get_usage_from_response); else it is null, as NVIDIA's README shows for older repositories."""
        model = self.launch.model(name)
        if model is None or not {"num_input_tokens", "num_output_tokens"} <= set(model.outputs):
            return None
        return {"prompt_tokens": request.prompt_tokens, "completion_tokens": request.generated,
                "total_tokens": request.prompt_tokens + request.generated}

    async def openai_models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self.openai_model_object(m.name)
                                                             for m in self.launch.models]})

    def openai_model_object(self, name: str) -> dict[str, Any]:
        return {"id": name, "created": int(self.created), "object": "model", "owned_by": "Triton Inference Server"}

    async def openai_model_one(self, http: web.Request) -> web.Response:
        name = http.match_info["model"]
        if self.launch.model(name) is None:
            raise ApiError(404, f"Unknown model: {name}")
        return web.json_response(self.openai_model_object(name))

    async def openai_ready(self, _: web.Request) -> web.Response:
        if not self.ready:
            raise ApiError(400, "Attached inference engine is not ready for inference requests.")
        return web.Response(status=200)

    async def openai_metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), content_type="text/plain", charset="utf-8")

    @staticmethod
    def max_tokens_of(body: dict[str, Any], default: int, chat: bool) -> Any:
        if chat and body.get("max_completion_tokens") is not None:
            return body["max_completion_tokens"]
        return body["max_tokens"] if body.get("max_tokens") is not None else default

    async def completions(self, http: web.Request) -> web.StreamResponse:
        body = await self.json_body(http)
        name = self.openai_model(body.get("model"))
        prompt = body.get("prompt")
        if not prompt:
            raise ApiError(400, "prompt must be non-empty")
        if not isinstance(prompt, str):
            raise ApiError(400, "only single string input is supported")
        request = self.openai_submit(name, prompt, body, self.max_tokens_of(body, self.launch.default_max_tokens,
                                                                            chat=False))
        ident, created = f"cmpl-{uuid.uuid1()}", int(time.time())

        def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"id": ident, "choices": choices, "created": created, "model": name,
                                   "system_fingerprint": None, "object": "text_completion"}
            if usage is not None:
                out["usage"] = usage
            return out

        if not body.get("stream"):
            text = await self.collect(request)
            return web.json_response({**chunk([{"finish_reason": "stop", "index": 0, "logprobs": None,
                                                "text": text}]), "usage": self.usage(name, request)})
        response = await self.sse(http)
        async for token in self.engine.stream(request):
            await self.event(response, chunk([{"finish_reason": "stop" if last(request) else None, "index": 0,
                                               "logprobs": None, "text": token}]))
        await self.end_stream(response, body, lambda usage: chunk([], usage), self.usage(name, request))
        return response

    async def chat_completions(self, http: web.Request) -> web.StreamResponse:
        body = await self.json_body(http)
        name = self.openai_model(body.get("model"))
        if self.launch.tokenizer is None:
            raise ApiError(500, "Unknown tokenizer")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(422, "messages: Field required")
        # The real frontend renders the tokenizer's chat template; the twin counts the messages' words
        # (the template's own tokens are not modelled).
        text = " ".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
        request = self.openai_submit(name, text, body, self.max_tokens_of(
            body, self.launch.default_max_tokens, chat=True))
        ident, created = f"cmpl-{uuid.uuid1()}", int(time.time())

        def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None,
                  kind: str = "chat.completion.chunk") -> dict[str, Any]:
            out: dict[str, Any] = {"id": ident, "choices": choices, "created": created, "model": name,
                                   "system_fingerprint": None, "object": kind}
            if usage is not None:
                out["usage"] = usage
            return out

        if not body.get("stream"):
            text = await self.collect(request)
            message = {"content": text, "tool_calls": None, "role": "assistant", "function_call": None}
            return web.json_response({**chunk([{"finish_reason": "stop", "index": 0, "message": message,
                                                "logprobs": None}], kind="chat.completion"),
                                      "usage": self.usage(name, request)})
        response = await self.sse(http)
        # The first chunk sets the role and carries no content (_get_first_streaming_chat_response).
        await self.event(response, chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                           "logprobs": None, "finish_reason": None}]))
        async for token in self.engine.stream(request):
            await self.event(response, chunk([{"index": 0, "delta": {"content": token}, "logprobs": None,
                                               "finish_reason": "stop" if last(request) else None}]))
        await self.end_stream(response, body, lambda usage: chunk([], usage), self.usage(name, request))
        return response

    @staticmethod
    async def sse(http: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(http)
        return response

    @staticmethod
    async def event(response: web.StreamResponse, data: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps(data)}\n\n".encode())

    async def end_stream(self, response: web.StreamResponse, body: dict[str, Any],
                         usage_chunk: Callable[[dict[str, int]], dict[str, Any]], usage: dict[str, int] | None
                         ) -> None:
        """The usage chunk (no choices) when stream_options.include_usage asks for it and the model returns
        token counts, then ``[DONE]``."""
        if (body.get("stream_options") or {}).get("include_usage") and usage is not None:
            await self.event(response, usage_chunk(usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()

    def openai_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # main.py's --http-max-input-size default
        o = self.openai_errors
        app.add_routes([
            web.get("/metrics", self.openai_metrics),
            web.get("/health/ready", o(self.openai_ready)),
            web.get("/v1/models", o(self.openai_models)),
            web.get("/v1/models/{model}", o(self.openai_model_one)),
            web.post("/v1/completions", o(self.completions)),
            web.post("/v1/chat/completions", o(self.chat_completions)),
        ])
        return app

    def http_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        k = self.kserve_errors
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
        ])
        return app

    def metrics_app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/metrics", self.scrape)])
        return app

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self.engine.start()
        apps = [(self.http_app(), self.launch.http_port)] if self.launch.http_port else []
        if self.launch.frontend == "openai":
            apps.append((self.openai_app(), self.launch.openai_port))  # metrics are served there
        elif self.launch.allow_metrics:
            apps.append((self.metrics_app(), self.launch.metrics_port))
        for app, port in apps:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, self.config.host, port).start()
            self.runners.append(runner)
        if self.launch.grpc_port:
            from inference_pods.emulator.grpc_service import start_grpc

            self.grpc_server = await start_grpc(self, self.config.host, self.launch.grpc_port)

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


def last(request: Request) -> bool:
    """Whether the token just taken from ``request``'s stream was its last (the final response): the engine
    queues the end marker right after it."""
    return request.finished_at is not None and request.tokens.qsize() == 1


async def _once(text: Awaitable[str]) -> AsyncIterator[str]:
    yield await text


def _first(values: Any) -> Any:
    while isinstance(values, list) and values:
        values = values[0]
    return values


async def serve(launch: Launch, config: EmulatorConfig) -> None:
    emulator = Emulator(launch, config)
    await emulator.start()
    log.info("serving models=%s frontend=%s http=%s:%d metrics=%d grpc=%d openai=%d ready_in=%.1fs",
             ",".join(launch.served), launch.frontend, config.host, launch.http_port, launch.metrics_port,
             launch.grpc_port, launch.openai_port, emulator.ready_after)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emulator.shutdown()
