"""One local `mlflow server` per gatelab home, shared by every gatelab process on the machine.

Why a server: many processes writing one SQLite file hit `database is locked` (docs/libraries.md, MLflow); a single
server with `--workers 1` serialises the writes and proxies artifacts (`--serve-artifacts`), so trials only need
its http URI.

Reuse across processes: the server's {pid, port, uri} is written to `<home>/mlflow-server.json`. A process that
finds a live, healthy server there uses it instead of starting a second one; starting and stopping are
serialised by an flock on `<home>/mlflow-server.lock`. The server runs in its own session (process group) so it
survives Ctrl-C of a client and so stopping it also ends the uvicorn worker it spawns.

Bound beyond loopback (GATELAB_MLFLOW_HOST on a cluster), the server runs MLflow's basic-auth app and every
gatelab client signs in with the home's credentials (tracking/server/auth.py).

MLflow's job runner (huey consumers, for GenAI jobs) is disabled: gatelab does not use it, it adds ~10 s to
start-up, and on SIGTERM the consumers were seen to outlive the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from gatelab.tracking.server.auth import server_args, server_env, use_credentials
from gatelab.tracking.store import Store

# Loopback by default. On a cluster the head sets GATELAB_MLFLOW_HOST to its private address so GPU workers
# can log to it (docs/cluster.md), and the server then asks for credentials; never a public address.
HOST = os.environ.get("GATELAB_MLFLOW_HOST", "127.0.0.1")
_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# On SQLite the server opens a connection per request instead of keeping a pool of 5 (+10 overflow). With 64 trials
# starting at once (`gatelab bench scale`), requests waited 30 s for a pooled connection and then failed with
# "QueuePool limit ... reached", which MLflow answers as 400 BAD_REQUEST: a client takes that as a refusal, and
# trials failed. Without a pool a busy server makes requests wait on SQLite's own lock (MLflow sets a 20-s busy
# timeout), and past that MLflow answers 503, which every client retries. A SQLite connection costs microseconds.
_SQLITE_SERVER_ENV = {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}
# Servers started by this process, by pid: waited on when stopped so they do not linger as zombies.
_CHILDREN: dict[int, subprocess.Popen] = {}


class ServerStartError(RuntimeError):
    """The MLflow server exited or did not answer /health in time; the message holds its log's tail."""


@dataclass(frozen=True)
class ServerInfo:
    """A running local MLflow server."""

    pid: int
    """Process id of the `mlflow server` command, also its process-group id."""
    port: int
    """TCP port on 127.0.0.1."""
    uri: str
    """Tracking URI for clients, e.g. http://127.0.0.1:5000."""


UI_PORT = 5000  # `gatelab ui`'s port when it starts a server (MLflow's own default)


def server_command(store: Store, port: int) -> list[str]:
    """The `mlflow server` command line for `store` on 127.0.0.1:`port`."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store.tracking_uri,
        "--artifacts-destination",
        str(store.artifacts_dir),
        "--serve-artifacts",
        "--workers",
        str(store.server_workers),
        "--host",
        HOST,
        "--port",
        str(port),
        *server_args(HOST, port),
    ]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may still take it before the server binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def is_healthy(uri: str, timeout_s: float = 2.0) -> bool:
    """True when `<uri>/health` answers 200 OK. Proxies are bypassed: the server is on loopback."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{uri}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def read_state(store: Store) -> ServerInfo | None:
    """The server recorded in `<home>/mlflow-server.json`, alive or not; None if absent or unreadable."""
    try:
        return ServerInfo(**json.loads(store.server_state_path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running_server(store: Store) -> ServerInfo | None:
    """The recorded server if its process is alive, is an mlflow server on that port, and answers /health;
    this process's MLflow clients then sign in to it where it needs credentials."""
    info = read_state(store)
    if info is None or not _pid_alive(info.pid) or not _is_mlflow_server(info.pid, info.port):
        return None
    if not is_healthy(info.uri):
        return None
    use_credentials(store, info.uri)
    return info


def use_server_credentials(store: Store, uri: str) -> None:
    """In a trial's worker: sign in to `uri` when it is the server the home records, never to another server
    (a grid's own tracking.uri must not receive the home's credentials)."""
    info = read_state(store)
    if info is not None and info.uri == uri.rstrip("/"):
        use_credentials(store, info.uri)


def ensure_server(store: Store, *, timeout_s: float = 120.0) -> tuple[ServerInfo, bool]:
    """The live server of `store`, starting one if needed; returns (info, started_by_this_call)."""
    store.ensure()
    with _server_lock(store):
        existing = running_server(store)
        if existing is not None:
            return existing, False
        info = _start_locked(store, port=None, timeout_s=timeout_s)
        return info, True


def revive_server(store: Store, uri: str, *, timeout_s: float = 120.0) -> bool:
    """Start the server recorded for `store` at `uri` again, on the same port, if its process is gone; True when
    this call did. A server stopped on purpose (its record removed) or replaced by another is left alone, and so
    is a live one that is slow to answer. ServerStartError when the port is taken or it does not come up."""
    with _server_lock(store):
        info = read_state(store)
        if info is None or info.uri != uri or _pid_alive(info.pid):
            return False
        _start_locked(store, port=info.port, timeout_s=timeout_s)
        return True


def stop_server(store: Store, *, pid: int | None = None, timeout_s: float = 15.0) -> bool:
    """Stop the recorded server (only if it is `pid`, when given); True if one was stopped."""
    with _server_lock(store):
        info = read_state(store)
        if info is None or (pid is not None and info.pid != pid):
            return False
        stopped = False
        if _pid_alive(info.pid) and _is_mlflow_server(info.pid, info.port):
            _terminate_group(info.pid, timeout_s)
            stopped = True
        store.server_state_path.unlink(missing_ok=True)
        return stopped


@contextlib.contextmanager
def local_server(store: Store, *, keep_running: bool = False, timeout_s: float = 120.0) -> Iterator[str]:
    """Yield the http tracking URI of the store's server. A server this call started is stopped on exit
    unless `keep_running`; a server that was already running is left running."""
    info, started = ensure_server(store, timeout_s=timeout_s)
    try:
        yield info.uri
    finally:
        current = read_state(store)  # the same server, or the one revive_server started in its place
        if started and not keep_running and current is not None and current.uri == info.uri:
            stop_server(store, pid=current.pid)


def ui(
    store: Store, port: int = UI_PORT, *, timeout_s: float = 120.0, on_ready: Callable[[str], None] | None = None
) -> int:
    """`gatelab ui`: serve the store on 127.0.0.1:`port` in the foreground until Ctrl-C; returns the exit code.

    The foreground server is recorded like any other, so trials started meanwhile log through it. If the store
    already has a live server, its URL is printed and nothing new is started. `on_ready(uri)` runs once the
    server answers (say, to print a grid's pages), before serving in the foreground."""
    store.ensure()
    with _server_lock(store):
        existing = running_server(store)
        if existing is None:
            info = _start_locked(store, port=port, timeout_s=timeout_s)
    if existing is not None:
        print(f"gatelab: MLflow UI already running at {existing.uri} (pid {existing.pid})", flush=True)
        if on_ready is not None:
            on_ready(existing.uri)
        return 0
    try:
        _interrupt_on(signal.SIGINT, signal.SIGTERM)
        print(f"gatelab: MLflow UI at {info.uri} (store {store.home}); Ctrl-C to stop", flush=True)
        if on_ready is not None:
            on_ready(info.uri)
        return _CHILDREN[info.pid].wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(store, pid=info.pid)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _interrupt_on(*signals: int) -> None:
    """Stop the foreground UI (and so its server) on these signals even where they arrive ignored: a process
    started with `&` by a non-interactive shell inherits SIGINT as ignored, and SIGTERM's default would exit
    without stopping the server."""
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            signal.signal(sig, _raise_interrupt)


def _start_locked(store: Store, *, port: int | None, timeout_s: float) -> ServerInfo:
    """Spawn a server (caller holds the lock); a random port that another process grabbed is retried."""
    attempts = 1 if port is not None else 3
    store.check_backend()
    auth_env = server_env(store, HOST)
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        uri = f"http://{HOST}:{chosen}"
        with store.server_log_path.open("ab") as log:
            log_offset = log.tell()
            proc = subprocess.Popen(
                server_command(store, chosen),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=store.home,
                env={**os.environ, **_SERVER_ENV, **(_SQLITE_SERVER_ENV if store.is_sqlite else {}), **auth_env},
                start_new_session=True,  # own process group: killpg ends uvicorn too; Ctrl-C of a client does not
            )
        _CHILDREN[proc.pid] = proc
        try:
            _wait_healthy(proc, uri, timeout_s, store.server_log_path, log_offset)
        except BaseException as error:  # incl. Ctrl-C: never leave an unrecorded server behind
            _terminate_group(proc.pid, 10.0)
            retry = isinstance(error, ServerStartError) and "address already in use" in str(error).lower()
            if retry and attempt + 1 < attempts:
                continue
            raise
        info = ServerInfo(pid=proc.pid, port=chosen, uri=uri)
        tmp = store.server_state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(info)))
        os.replace(tmp, store.server_state_path)
        use_credentials(store, uri)
        return info
    raise AssertionError("unreachable")


def _wait_healthy(proc: subprocess.Popen, uri: str, timeout_s: float, log_path: Path, log_offset: int) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(
                f"mlflow server for {uri} exited with code {proc.returncode} before answering /health; "
                f"log {log_path}:\n{_log_tail(log_path, log_offset)}"
            )
        if is_healthy(uri, timeout_s=1.0):
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise ServerStartError(
        f"mlflow server for {uri} did not answer /health within {timeout_s:.0f} s; "
        f"log {log_path}:\n{_log_tail(log_path, log_offset)}"
    )


def _log_tail(path: Path, offset: int, limit: int = 3000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")[-limit:]
    except OSError as error:
        return f"(log unreadable: {error})"


@contextlib.contextmanager
def _server_lock(store: Store) -> Iterator[None]:
    store.home.mkdir(parents=True, exist_ok=True)
    with store.server_lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) != "Z"  # a zombie is dead; None (no /proc) trusts os.kill


def _proc_state(pid: int) -> str | None:
    """One-letter state from /proc/<pid>/stat ('Z' = zombie), or None when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _is_mlflow_server(pid: int, port: int) -> bool:
    """Guard against pid reuse: the process's command line must be an mlflow server on `port`."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return not Path("/proc").is_dir()  # no /proc (macOS): trust pid + /health
    return b"mlflow" in b" ".join(argv) and b"server" in argv and str(port).encode() in argv


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in process group `pgid`."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _terminate_group(pgid: int, timeout_s: float) -> None:
    """SIGTERM the server's process group, SIGKILL it after `timeout_s`, and reap our own child."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _group_alive(pgid):
            child = _CHILDREN.get(pgid)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=0.1)
            else:
                time.sleep(0.1)
        if not _group_alive(pgid):
            break
    child = _CHILDREN.pop(pgid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5.0)
