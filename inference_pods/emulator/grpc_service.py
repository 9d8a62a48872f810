"""Triton's gRPC protocol (KServe v2 GRPCInferenceService), served with tritonclient's own stubs."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

if TYPE_CHECKING:
    from inference_pods.emulator.server import Emulator


def _bytes_elements(raw: bytes) -> list[bytes]:
    """Triton's BYTES tensor wire format: each element is a 4-byte little-endian length, then data."""
    out, offset = [], 0
    while offset + 4 <= len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4: offset + 4 + length])
        offset += 4 + length
    return out


def _encode_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


class TritonService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - protocol names
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self.emulator.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ModelReadyResponse(
            ready=self.emulator.launch.model(request.name) is not None and self.emulator.ready)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._check(request.name, context)
        model = self.emulator.launch.model(request.name)
        assert model is not None
        meta = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=request.name, versions=["1"], platform=model.platform or model.backend,
            inputs=[meta(name=i, datatype="BYTES" if i == "text_input" else "INT32", shape=[-1])
                    for i in model.inputs],
            outputs=[meta(name="text_output", datatype="BYTES", shape=[-1])],
        )

    def _values(self, request: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for index, tensor in enumerate(request.inputs):
            raw = request.raw_input_contents[index] if index < len(request.raw_input_contents) else b""
            if tensor.datatype == "BYTES":
                elements = _bytes_elements(raw) if raw else list(tensor.contents.bytes_contents)
                values[tensor.name] = elements[0].decode() if elements else ""
            elif tensor.datatype in ("INT32", "UINT32"):
                values[tensor.name] = (struct.unpack_from("<i", raw)[0] if raw
                                       else tensor.contents.int_contents[0])
            elif tensor.datatype == "BOOL":
                values[tensor.name] = bool(raw[0]) if raw else tensor.contents.bool_contents[0]
        return values

    def _response(self, request: Any, text: str, final: bool | None = None) -> Any:
        response = service_pb2.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id,
            outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name="text_output", datatype="BYTES",
                                                                       shape=[1])],
            raw_output_contents=[_encode_bytes([text.encode()])],
        )
        if final is not None:
            response.parameters["triton_final_response"].bool_param = final
        return response

    async def _submit(self, request: Any, context: Any) -> tuple[Any, bool]:
        from inference_pods.emulator.server import ApiError

        values = self._values(request)
        if "text_input" not in values:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected input 'text_input' (BYTES) is missing")
        try:
            stream = self.emulator.streaming(request.model_name, values)
            return self.emulator.submit(request.model_name, values["text_input"],
                                        self.emulator.max_tokens(request.model_name, values), stream), stream
        except ApiError as error:
            code = grpc.StatusCode.UNAVAILABLE if error.status == 503 else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, error.message)
            raise  # abort raises; this keeps the type checker and a misbehaving context honest

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._check(request.model_name, context)
        if self.emulator.decoupled(request.model_name):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                "ModelInfer RPC doesn't support models with decoupled transaction policy")
        engine_request, _ = await self._submit(request, context)
        output = await self.emulator.collect(engine_request)
        return self._response(request, output)

    async def ModelStreamInfer(self, requests: Any, context: Any) -> Any:  # noqa: N802
        """Triton's bidirectional stream: one response per generated token for a decoupled model asked
        to stream (the last flagged ``triton_final_response``), else one response with the whole text."""
        async for request in requests:
            if self.emulator.launch.model(request.model_name) is None:
                yield service_pb2.ModelStreamInferResponse(
                    error_message=f"Request for unknown model: '{request.model_name}' is not found")
                continue
            try:
                engine_request, stream = await self._submit(request, context)
            except Exception as error:  # an abort ends the stream; report it in-band first
                yield service_pb2.ModelStreamInferResponse(error_message=str(error))
                raise
            if not stream:
                text = await self.emulator.collect(engine_request)
                yield service_pb2.ModelStreamInferResponse(infer_response=self._response(request, text))
                continue
            async for token in self.emulator.engine.stream(engine_request):
                yield service_pb2.ModelStreamInferResponse(infer_response=self._response(request, token, False))
            final = self._response(request, "", True)
            del final.outputs[:]
            del final.raw_output_contents[:]
            yield service_pb2.ModelStreamInferResponse(infer_response=final)

    async def _check(self, name: str, context: Any) -> None:
        if self.emulator.launch.model(name) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")


async def start_grpc(emulator: Emulator, host: str, port: int) -> Any:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(TritonService(emulator), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server
