"""The sandbox engine: zygotes, containment, limits, and the gRPC server."""
