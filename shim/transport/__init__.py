"""The shim's RPC layer: one handler registry (`rpc`) served over ttrpc (`ttrpc`, what
containerd uses) and gRPC (`grpc_server`, the only module that imports grpc), and task events
sent to containerd (`events`). Importing this package imports nothing else."""
