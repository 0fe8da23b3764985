"""The gRPC relay: xAI's own SDK (xai-sdk) through the daemon, relayed and metered like REST.

Rooms: `proxy` (the listener, the upstream channel, one call from start to its one ending),
`hop` (what metadata crosses either way, the server's and the channel's options, TLS roots),
`methods` (the one table of methods: endpoint names, what bills, the message readers), `usage`
(``SamplingUsage`` as the normalized `Usage`; gRPC codes as HTTP statuses), `protos` (xAI's
message classes from the xai-sdk package, without importing the SDK itself).
"""

from __future__ import annotations

from daemon.grpc_relay.proxy import GrpcRelay

__all__ = ["GrpcRelay"]
