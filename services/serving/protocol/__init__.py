"""The Open Inference Protocol's gRPC messages: inference.proto and the module `make proto`
generates from it (used by services/serving/grpc_server.py)."""
