"""tracking/server/auth.py: the local MLflow server asks for credentials once it binds beyond loopback.

The server test binds a real server to an address beyond loopback and sends real requests: without credentials
they are refused, gatelab's own clients (the ledger, an artifact upload, the raw bulk-history route, a worker that
shares only the home) get through. It runs in a network namespace of its own (tests/netns/), so that address and
all its traffic exist only there: tests send nothing to this machine's own interface address or beyond.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gatelab.tracking.server import process as server_module
from gatelab.tracking.server.auth import (
    ServerAuthError,
    ensure_credentials,
    is_loopback,
    server_args,
    server_env,
    sign_in_note,
    uri_is_loopback,
)
from gatelab.tracking.store import Store

from grid_helpers import run_gatelab
from netns.server_beyond_loopback import NETNS_ADDRESS

# An address of the benchmarking range (RFC 2544, 198.18.0.0/15), given to the test's own network namespace.
TEST_ADDRESS = "198.18.0.1"


def test_loopback_is_told_apart_from_every_other_address():
    for host in ("127.0.0.1", "127.8.0.1", "localhost", "LOCALHOST", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "10.0.3.7", "192.168.1.2", "head-node", "::", "fd00::1"):
        assert not is_loopback(host), host
    assert uri_is_loopback("http://127.0.0.1:5000") and not uri_is_loopback("http://10.0.3.7:5000")


def test_a_loopback_server_stays_without_auth(tmp_path):
    store = Store(tmp_path / "home").ensure()
    assert server_args("127.0.0.1", 5000) == [] and server_env(store, "127.0.0.1") == {}
    assert "--app-name" not in server_module.server_command(store, 5000)  # the default host is loopback
    assert not store.server_credentials_path.exists() and not store.server_auth_config_path.exists()
    assert sign_in_note(store, "http://127.0.0.1:5000") is None


def test_credentials_are_made_once_and_only_their_owner_may_read_them(tmp_path):
    store = Store(tmp_path / "home").ensure()
    old_umask = os.umask(0)  # a permissive umask must not loosen the file: it is created 0600
    try:
        made = ensure_credentials(store)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(store.server_credentials_path.stat().st_mode) == 0o600
    assert ensure_credentials(store) == made  # read back, not made again
    assert len(made.password) >= 40 and made.password != made.secret_key
    assert [p.name for p in store.home.iterdir() if p.name.startswith("mlflow-auth")] == ["mlflow-auth.json"]


def test_a_lost_credentials_file_is_not_silently_replaced(tmp_path):
    store = Store(tmp_path / "home").ensure()
    store.server_auth_db_path.write_bytes(b"")  # the users of an earlier server, with its admin's password
    with pytest.raises(ServerAuthError, match=r"mlflow-auth\.db: .* mlflow-auth\.json, which is missing") as error:
        ensure_credentials(store)
    assert error.value.path == store.server_auth_db_path
    assert not store.server_credentials_path.exists()
    # From the command line: one line naming the file, exit 2, and no server started.
    result = run_gatelab(
        "ui",
        "--home",
        str(store.home),
        env={**os.environ, "GATELAB_MLFLOW_HOST": TEST_ADDRESS},  # fails before it binds: nothing is sent
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"gatelab: error: {store.server_auth_db_path}: ")
    assert not store.server_state_path.exists() and not store.server_credentials_path.exists()


@pytest.mark.mlflow
def test_a_server_beyond_loopback_refuses_requests_without_credentials():
    """tests/netns/server_beyond_loopback.py, run in a network namespace made here: its loopback interface also
    carries TEST_ADDRESS, and the server and every client live inside it, so no packet leaves the namespace."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("making a network namespace needs root, unshare (util-linux) and ip (iproute2)")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine lets no process make a network namespace: {probe.stderr.strip()}")
    inner = Path(__file__).parent / "netns" / "server_beyond_loopback.py"
    setup = f"ip link set lo up && ip addr add {TEST_ADDRESS}/15 dev lo"
    pytest_args = f"-p no:cacheprovider {shlex.quote(str(inner))}"
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", f"{setup} && exec {shlex.quote(sys.executable)} -m pytest {pytest_args}"],
        env={**os.environ, NETNS_ADDRESS: TEST_ADDRESS},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and re.search(r"^1 passed\b", result.stdout, re.M), (
        result.stdout[-6000:] + result.stderr[-3000:]
    )
