"""A Ray that gatelab starts for itself listens on loopback only: its node address is 127.0.0.1 and its GCS,
raylets and workers bind there, so a grid on a laptop or workstation opens nothing to the network and talks
to itself through loopback. Joining a cluster (`--address`, `ray.address`) does not go through here.

Why a switch and not only `_node_ip_address="127.0.0.1"`: on Linux, Ray 2.60 replaces a loopback node
address by the default-route interface's (`ray._private.services.resolve_ip_for_localhost`, measured: the
node then reports and listens on the interface address). It keeps 127.0.0.1 only in its single-machine mode,
the one it uses on macOS and Windows, selected by the environment variable RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
(`ray_constants.ENABLE_RAY_CLUSTER`, read once when ray is imported). With that mode and the node address
127.0.0.1, Ray's own servers bind to 127.0.0.1 instead of every interface (measured with `ss -ltn`). See
docs/libraries.md, Ray core."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

LOOPBACK = "127.0.0.1"
SINGLE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# The environment of the Ray processes started on loopback: single-machine mode, and no usage report to Ray's
# makers (ray.init turns it off for a local Ray by itself; a ray.cluster_utils.Cluster's head would send it).
LOOPBACK_ENV = {SINGLE_MACHINE_SWITCH: "0", "RAY_USAGE_STATS_ENABLED": "0"}
# What a node of a loopback Ray is given (ray.cluster_utils.Cluster's head_node_args and add_node take it).
LOOPBACK_NODE = {"node_ip_address": LOOPBACK}


@contextmanager
def loopback_only() -> Iterator[None]:
    """Ray's single-machine mode while the block runs: for this process (the flag Ray read at import) and for
    the processes Ray starts in it (its environment, which the raylet hands on to every worker). Restored on
    exit, so the same process can later join a real cluster."""
    from ray._private import ray_constants

    env_before = {name: os.environ.get(name) for name in LOOPBACK_ENV}
    flag_before = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = flag_before
        for name, value in env_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def init_local_ray(**ray_init_kwargs) -> None:
    """`ray.init` of a new local Ray on loopback (address "local": never silently join whatever cluster
    /tmp/ray/ray_current_cluster names, another user's or another test's)."""
    import ray

    with loopback_only():
        ray.init(address="local", _node_ip_address=LOOPBACK, **ray_init_kwargs)


@contextmanager
def loopback_cluster(driver_args: dict | None = None, **head_node_args):
    """A `ray.cluster_utils.Cluster` whose nodes all live on 127.0.0.1 (several nodes on one machine, to
    simulate node loss), with this process connected as its driver (`ray.init` given `driver_args`); shut down on
    exit. Inside the block, `add_node(**LOOPBACK_NODE, ...)` adds a node."""
    import ray
    from ray.cluster_utils import Cluster

    with loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args={**head_node_args, **LOOPBACK_NODE})
        try:
            ray.init(address=cluster.address, **(driver_args or {}))
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()
