"""The serving benchmark's upper limit for gRPC: grpcio's thread-pool server (as serving runs
it, 64 workers) answering ModelInfer with fixed bytes and doing no other work.

    python -m benchmarks.empty_grpc PORT
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc

from services.serving.protocol import inference_pb2 as pb

ANSWER = pb.ModelInferResponse(model_name="bench", model_version="1").SerializeToString()


def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
    return ANSWER


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(64))
    methods = {"ModelInfer": grpc.unary_unary_rpc_method_handler(answer)}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", methods),)
    )
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
