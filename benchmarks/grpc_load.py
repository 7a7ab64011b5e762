"""A gRPC load generator for the serving benchmark (wrk speaks only HTTP/1.1): `concurrency`
calls in flight on one channel, each sending the same serialized ModelInferRequest, for
`seconds`; prints one JSON line with requests/s, p50 and p99 (ms), requests, errors and the
CPU this client used per second (near 1.0: the client, not the server, is the limit).

    python -m benchmarks.grpc_load TARGET REQUEST_FILE [--seconds S] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import grpc

METHOD = "/inference.GRPCInferenceService/ModelInfer"


async def load(target: str, body: bytes, seconds: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        # bytes in, bytes out: the client does not parse what it sends or gets
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        await call(body, timeout=10)  # connected and warm
        start = time.monotonic()
        cpu = time.process_time()

        async def client() -> None:
            nonlocal errors
            while time.monotonic() - start < seconds:
                sent = time.monotonic()
                try:
                    await call(body, timeout=10)
                    latencies.append(time.monotonic() - sent)
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.monotonic() - start
        cpu = time.process_time() - cpu
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "rps": len(latencies) / elapsed,
        "p50": cuts[49] * 1e3,
        "p99": cuts[98] * 1e3,
        "requests": len(latencies) + errors,
        "errors": errors,
        "client_cpu": cpu / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("request", type=Path)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    result = asyncio.run(load(args.target, args.request.read_bytes(), args.seconds, args.concurrency))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
