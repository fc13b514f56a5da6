"""A Ray that gatelab starts for itself lives on loopback: its node address is 127.0.0.1, every socket its
processes listen on is bound to loopback, and its workers see 127.0.0.1 as their node's address (what Ray
Train gives DDP's rendezvous). Without grid/dispatch/local_ray.py, Ray on Linux takes the default-route
interface's address and listens on every interface."""

import ipaddress
import os

import psutil
import pytest
import ray
from ray._private import ray_constants

from gatelab.grid.dispatch.local_ray import LOOPBACK, LOOPBACK_ENV, LOOPBACK_NODE, loopback_cluster
from gatelab.grid.dispatch.ray_jobs import start_ray
from gatelab.grid.spec.grid_file import load_grid

from grid_helpers import write_grid

pytestmark = pytest.mark.ray


def _listening_addresses() -> set[str]:
    """The addresses that this process and every process it started (Ray's GCS, raylets, workers) listen on."""
    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    addresses = set()
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        addresses |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return addresses


@ray.remote(num_cpus=1)
def _worker_node_address() -> str:
    return ray.util.get_node_ip_address()


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback  # ::ffff:127.0.0.1 is a v6 socket on loopback


def _assert_on_loopback(nodes: int) -> None:
    assert [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]] == [LOOPBACK] * nodes
    assert ray.get(_worker_node_address.remote()) == LOOPBACK
    listening = _listening_addresses()
    assert listening, "found no listening socket of Ray's: the check itself is broken"
    assert all(_is_loopback(a) for a in listening), listening


def test_start_ray_binds_a_local_ray_to_loopback_only(tmp_path):
    spec = load_grid(write_grid(tmp_path / "local.yaml", "local", ["baseline"]))
    assert not ray.is_initialized()
    env_before = {name: os.environ.get(name) for name in LOOPBACK_ENV}
    start_ray(spec, None)
    try:
        _assert_on_loopback(nodes=1)
    finally:
        ray.shutdown()
    # the single-machine switch is lifted again: the same process may later join a real cluster
    assert {name: os.environ.get(name) for name in LOOPBACK_ENV} == env_before and ray_constants.ENABLE_RAY_CLUSTER


def test_a_simulated_cluster_keeps_every_node_on_loopback():
    with loopback_cluster(num_cpus=1) as cluster:
        cluster.add_node(num_cpus=1, **LOOPBACK_NODE)
        cluster.wait_for_nodes()
        _assert_on_loopback(nodes=2)
