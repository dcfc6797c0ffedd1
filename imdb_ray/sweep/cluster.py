"""What a sweep checks of the Ray cluster it is told to join (`--address`), before it prepares anything: that
something answers there, and that it speaks as a Ray head does. Ray's own client, given a port where nothing
answers or where another service does (the dashboard's 8265, say), retries for minutes."""
from __future__ import annotations

import os
import socket

from imdb_ray.errors import UserError
from imdb_ray.sweep.ray_compat import cluster_address


def check_cluster_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A Ray head that answers at `address`, or a one-line error (and `auto` with none: Ray raises a traceback)."""
    target = cluster_address(address) if address == "auto" else address.removeprefix("ray://")
    if target is None:
        raise UserError(f"--address {address}: no running Ray cluster found (start one: `ray start --head` here or "
                        "`ray up cluster.yaml`, or set RAY_ADDRESS); leave --address out to start a local Ray")
    host, _, port = target.rpartition(":")
    if not port.isdigit():
        raise UserError(f"--address {address}: {port!r} is not a port number; use HOST:PORT or ray://HOST:10001")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"--address {address}: nothing answers at {host}:{port} ({e.strerror or type(e).__name__}); "
                        "start the cluster (`ray start --head` or `ray up cluster.yaml`) or fix the address") from None
    if not speaks_grpc(f"{host}:{port}", timeout_s):
        raise UserError(f"--address {address}: {host}:{port} answers, but not as a Ray head (no gRPC there); give the "
                        "head's GCS port (6379 unless `ray start --head --port` set another; not the dashboard's 8265) "
                        "or ray://HOST:10001")


def speaks_grpc(target: str, timeout_s: float) -> bool:
    """Whether `target` completes a gRPC (HTTP/2) handshake, as a Ray head's GCS and Ray Client server do; a web
    server or any other service fails it at once (or says nothing in `timeout_s`). A cluster with TLS
    (RAY_USE_TLS) is left to Ray's own client."""
    import queue

    import grpc

    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return True
    settled: queue.Queue = queue.Queue()
    ends = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)

    def seen(state: grpc.ChannelConnectivity) -> None:
        if state in ends:
            settled.put(state)

    channel = grpc.insecure_channel(target)
    channel.subscribe(seen, try_to_connect=True)
    try:
        return settled.get(timeout=timeout_s) == grpc.ChannelConnectivity.READY
    except queue.Empty:
        return False
    finally:
        channel.unsubscribe(seen)
        channel.close()
