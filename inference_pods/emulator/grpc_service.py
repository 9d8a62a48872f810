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
            ready=request.name == self.emulator.config.model_name and self.emulator.ready)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        await self._check(request.name, context)
        return service_pb2.ModelMetadataResponse(
            name=self.emulator.config.model_name, versions=["1"], platform="ensemble",
            inputs=[service_pb2.ModelMetadataResponse.TensorMetadata(name="text_input", datatype="BYTES",
                                                                      shape=[-1, 1]),
                    service_pb2.ModelMetadataResponse.TensorMetadata(name="max_tokens", datatype="INT32",
                                                                      shape=[-1, 1])],
            outputs=[service_pb2.ModelMetadataResponse.TensorMetadata(name="text_output", datatype="BYTES",
                                                                       shape=[-1, 1])],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        from inference_pods.emulator.server import ApiError

        await self._check(request.model_name, context)
        values: dict[str, Any] = {}
        for index, tensor in enumerate(request.inputs):
            raw = request.raw_input_contents[index] if index < len(request.raw_input_contents) else b""
            if tensor.datatype == "BYTES":
                elements = _bytes_elements(raw) if raw else list(tensor.contents.bytes_contents)
                values[tensor.name] = elements[0].decode() if elements else ""
            elif tensor.datatype == "INT32":
                values[tensor.name] = (struct.unpack_from("<i", raw)[0] if raw
                                       else tensor.contents.int_contents[0])
        if "text_input" not in values:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected input 'text_input' (BYTES) is missing")
        try:
            engine_request = self.emulator.submit(values["text_input"], values.get("max_tokens", 16))
        except ApiError as error:
            code = grpc.StatusCode.UNAVAILABLE if error.status == 503 else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, error.message)
        output = await self.emulator.collect(engine_request)
        return service_pb2.ModelInferResponse(
            model_name=self.emulator.config.model_name, model_version="1", id=request.id,
            outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name="text_output", datatype="BYTES",
                                                                       shape=[1, 1])],
            raw_output_contents=[_encode_bytes([output.encode()])],
        )

    async def _check(self, name: str, context: Any) -> None:
        if name != self.emulator.config.model_name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")


async def start_grpc(emulator: Emulator, host: str, port: int) -> Any:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(TritonService(emulator), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server
