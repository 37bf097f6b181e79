"""Start, stop and inspect the local services: a Prefect server and a SeaweedFS S3 store.

Both bind to 127.0.0.1 only. Each service keeps ``state.json`` (pid, ports, url) and
``service.log`` under ``<home>/services/<name>/``; a second ``up`` reuses what is running.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from infra.signals import children_get_default_signals
from model.errors import RegistryError, ServiceError
from model.registry.store import ModelRegistry
from model.settings import Settings

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
PREFECT = "prefect"
SEAWEEDFS = "seaweedfs"
WORKER = "worker"
#: What `services up` starts; the worker (started by `fer up`) polls the Prefect server.
SERVICE_NAMES = (PREFECT, SEAWEEDFS)
# Internal SeaweedFS ports (master, volume, filer, gRPC, admin): chosen free at each start,
# since only the S3 port is part of the platform's contract.
_WEED_INTERNAL_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass
class ServiceState:
    """What ``up`` recorded about a running service."""

    name: str
    pid: int
    port: int
    url: str
    command: list[str]
    extra_ports: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0


@dataclass(frozen=True)
class ServiceStatus:
    """A service as ``status`` reports it."""

    name: str
    running: bool
    url: str
    pid: int | None
    log_path: Path
    note: str = ""


def service_dir(settings: Settings, name: str) -> Path:
    """Folder holding a service's state file and log.

    Args:
        settings: platform settings.
        name: ``prefect`` or ``seaweedfs``.

    Returns:
        ``<home>/services/<name>``.
    """
    return settings.home_dir / "services" / name


def _state_path(settings: Settings, name: str) -> Path:
    return service_dir(settings, name) / "state.json"


def log_path(settings: Settings, name: str) -> Path:
    """The service's log file.

    Args:
        settings: platform settings.
        name: service name.

    Returns:
        ``<home>/services/<name>/service.log``.
    """
    return service_dir(settings, name) / "service.log"


def read_state(settings: Settings, name: str) -> ServiceState | None:
    """The recorded state of a service, or None if none is recorded."""
    path = _state_path(settings, name)
    if not path.exists():
        return None
    return ServiceState(**json.loads(path.read_text()))


def _write_state(settings: Settings, state: ServiceState) -> None:
    path = _state_path(settings, state.name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path)


def is_alive(pid: int, command: list[str]) -> bool:
    """Whether ``pid`` is a live (not zombie) process running ``command``'s program.

    Checking the command line guards against a recycled pid.

    Args:
        pid: process id.
        command: the argv the service was started with.
    """
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    program = Path(command[0]).name.encode()
    return state != "Z" and any(
        Path(part.decode(errors="replace")).name.encode() == program for part in cmdline[:2]
    )


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether something already listens on ``host:port``.

    Args:
        port: TCP port.
        host: interface to try.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Picked below the kernel's ephemeral range: outgoing connections draw their local ports
    from that range and could take a port between this check and the service's bind.

    Returns:
        The port number.
    """
    low = min(_ephemeral_range()[0], 65536)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, max(low, 20001))
        if not port_in_use(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _executable(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServiceError(
            f"the `{name}` program is not installed; install the project (README, first command)"
        )
    return found


def _answers(url: str, timeout: float) -> bool:
    """Whether ``url`` answers 200 within ``timeout`` seconds."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _prefect_health(url: str) -> bool:
    return _answers(f"{url}/api/health", timeout=2)


def require_prefect(settings: Settings) -> None:
    """Raise unless the configured Prefect API answers.

    Raises:
        ServiceError: naming the URL and how to start a server.
    """
    if not _answers(f"{settings.prefect_url}/health", timeout=5):
        raise ServiceError(
            f"no Prefect server answers at {settings.prefect_url}; start one with "
            "`fer services up` or set FER_PREFECT_API_URL to a running server"
        )


def _s3_health(url: str) -> bool:
    try:
        # Any HTTP answer (403 without credentials) means the S3 API is listening.
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


def wait_for_health(
    check: Callable[[], bool],
    state: ServiceState,
    settings: Settings,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until ``check()`` passes; raise naming the service and its log when it does not.

    Raises:
        ServiceError: the process exited or ``timeout`` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        # A process this call spawned is watched through its handle: /proc/<pid>/cmdline reads
        # empty while the kernel is still setting up exec, which would look like an exit.
        code = process.poll() if process is not None else None
        if code is not None or (process is None and not is_alive(state.pid, state.command)):
            how = f" with code {code}" if code is not None else ""
            raise ServiceError(
                f"{state.name} exited{how} while starting; "
                f"see {log_path(settings, state.name)}:\n" + _log_tail(settings, state.name)
            )
        time.sleep(0.5)
    raise ServiceError(
        f"{state.name} did not become healthy at {state.url} within {timeout:.0f} s; "
        f"see {log_path(settings, state.name)}"
    )


def wait_or_stop(
    check: Callable[[], bool],
    state: ServiceState,
    settings: Settings,
    timeout: float,
    process: subprocess.Popen[bytes],
) -> None:
    """Wait for health; a service that never got healthy is stopped, not left half-started.

    So is one whose start was interrupted (Ctrl-C, SIGTERM).
    """
    try:
        wait_for_health(check, state, settings, timeout, process)
    except (ServiceError, KeyboardInterrupt):
        stop_service(state, grace=10)
        process.poll()  # reap it, so no zombie is left behind
        _state_path(settings, state.name).unlink(missing_ok=True)
        raise


def _log_tail(settings: Settings, name: str, lines: int = 15) -> str:
    path = log_path(settings, name)
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    # glog marks fatal lines "F<date>"; they say why, the stack trace after them does not.
    fatal = [line for line in text[-200:] if line[:1] == "F" and line[1:5].isdigit()]
    return "\n".join(fatal[-3:] + text[-lines:])


def spawn_service(
    settings: Settings, name: str, command: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start a service in its own process group, logging to its log file."""
    service_dir(settings, name).mkdir(parents=True, exist_ok=True)
    with log_path(settings, name).open("ab") as log, children_get_default_signals():
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            cwd=service_dir(settings, name),
            # Own process group, so `down` stops the service and every child it forked.
            start_new_session=True,
        )


def _check_port_free(port: int, setting: str) -> None:
    if port_in_use(port):
        raise ServiceError(
            f"port {port} on {LOOPBACK} is already in use by another program; "
            f"stop it or choose a free port with {setting}=<port>"
        )


def _prefect_spec(settings: Settings) -> tuple[list[str], dict[str, str], str]:
    port = settings.prefect_port
    command = [_executable("prefect"), "server", "start", "--host", LOOPBACK, "--port", str(port)]
    env = {
        "PREFECT_HOME": str(settings.home_dir / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://{LOOPBACK}:{port}/api",
    }
    return command, env, f"http://{LOOPBACK}:{port}"


def seaweedfs_spec(settings: Settings) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """SeaweedFS's command line, environment and the free internal ports it was given."""
    data_dir = settings.home_dir / "seaweedfs" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    internal = {flag: free_port() for flag in _WEED_INTERNAL_PORTS}
    command = [
        _executable("weed"),
        # glog's files go beside service.log instead of piling up in /tmp.
        f"-logdir={service_dir(settings, SEAWEEDFS)}",
        "mini",
        f"-dir={data_dir}",
        # Without -ip/-ip.bind SeaweedFS listens on every interface.
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={settings.s3_port}",
        *(f"-{flag}={port}" for flag, port in internal.items()),
    ]
    env = {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
    }
    return command, env, internal


def _start_prefect(settings: Settings, timeout: float) -> ServiceState:
    command, env, url = _prefect_spec(settings)
    _check_port_free(settings.prefect_port, "FER_PREFECT_PORT")
    process = spawn_service(settings, PREFECT, command, env)
    state = ServiceState(
        PREFECT,
        process.pid,
        settings.prefect_port,
        url,
        command,
        started_at=time.time(),
    )
    _write_state(settings, state)
    wait_or_stop(lambda: _prefect_health(url), state, settings, timeout, process)
    return state


def _lost_internal_port(error: ServiceError, settings: Settings) -> bool:
    message = str(error)
    # weed reports a taken port before binding ("... is not available") or at bind time.
    taken = "address already in use" in message or "is not available" in message
    s3_port = str(settings.s3_port)
    return taken and f":{s3_port}:" not in message and f"port {s3_port} " not in message


def start_seaweedfs(settings: Settings, timeout: float, attempts: int = 3) -> ServiceState:
    """Start SeaweedFS, again on fresh internal ports when another process took one."""
    _check_port_free(settings.s3_port, "FER_S3_PORT")
    url = f"http://{LOOPBACK}:{settings.s3_port}"
    attempt = 1
    while True:
        command, env, internal = seaweedfs_spec(settings)
        process = spawn_service(settings, SEAWEEDFS, command, env)
        state = ServiceState(
            SEAWEEDFS,
            process.pid,
            settings.s3_port,
            url,
            command,
            extra_ports=internal,
            started_at=time.time(),
        )
        _write_state(settings, state)
        try:
            wait_or_stop(lambda: _s3_health(url), state, settings, timeout, process)
            return state
        except ServiceError as error:
            # Another program can take an internal port between our check and weed's bind:
            # start again on fresh internal ports.
            if attempt == attempts or not _lost_internal_port(error, settings):
                raise
            logger.warning("seaweedfs lost an internal port to another program; retrying")
            attempt += 1


def ensure_store_bucket(settings: Settings, timeout: float) -> None:
    """Create the store's bucket, retrying while SeaweedFS finishes starting."""
    registry = ModelRegistry.from_settings(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            registry.ensure_bucket()
            return
        except RegistryError:
            # The S3 API answers before its volume server has registered; retry until ready.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _configured_port(settings: Settings, name: str) -> int:
    return settings.prefect_port if name == PREFECT else settings.s3_port


def _running_state(settings: Settings, name: str) -> ServiceState | None:
    state = read_state(settings, name)
    if state is None:
        return None
    if is_alive(state.pid, state.command):
        return state
    _state_path(settings, name).unlink(missing_ok=True)
    return None


def services_up(settings: Settings, timeout: float = 180.0) -> list[ServiceStatus]:
    """Start the Prefect server and SeaweedFS, or reuse them if already running.

    Args:
        settings: platform settings (home, ports, bucket, credentials).
        timeout: seconds to wait for each service to become healthy.

    Returns:
        Status of both services.

    Raises:
        ServiceError: if a port is taken by another program or a service fails to start.
        RegistryError: if the model bucket cannot be created (e.g. wrong credentials).
        Either way, or when interrupted, the services this call started are stopped again.
    """
    health = {PREFECT: _prefect_health, SEAWEEDFS: _s3_health}
    starters = {PREFECT: _start_prefect, SEAWEEDFS: start_seaweedfs}
    notes: dict[str, str] = {}
    # Check every port first, so a conflict is reported before anything is started.
    for name, setting in ((PREFECT, "FER_PREFECT_PORT"), (SEAWEEDFS, "FER_S3_PORT")):
        if _running_state(settings, name) is None:
            _check_port_free(_configured_port(settings, name), setting)
    started: list[ServiceState] = []
    try:
        for name in SERVICE_NAMES:
            state = _running_state(settings, name)
            if state is None:
                logger.info("starting %s", name)
                started.append(starters[name](settings, timeout))
                notes[name] = "started"
                continue
            if state.port != _configured_port(settings, name):
                raise ServiceError(
                    f"{name} is already running on port {state.port}, not on the configured "
                    f"{_configured_port(settings, name)}; run `fer services down` and `up` "
                    "again to move it"
                )
            url = state.url
            healthy = health[name]
            wait_for_health(lambda url=url, check=healthy: check(url), state, settings, timeout)
            notes[name] = "already running"
        # Bounded well below `timeout`: wrong credentials fail the same way on every try.
        ensure_store_bucket(settings, min(timeout, 30.0))
    except (ServiceError, RegistryError, KeyboardInterrupt):
        # All or nothing, also when interrupted: what this call started is stopped again;
        # what ran before is kept.
        for state in started:
            logger.warning("stopping %s: the platform did not come up", state.name)
            stop_service(state, grace=10)
            _state_path(settings, state.name).unlink(missing_ok=True)
        raise
    return [
        ServiceStatus(s.name, s.running, s.url, s.pid, s.log_path, notes[s.name])
        for s in services_status(settings)
        if s.name in notes
    ]


def services_status(settings: Settings) -> list[ServiceStatus]:
    """Report whether each local service (and the worker) is running and healthy.

    Args:
        settings: platform settings.

    Returns:
        One status per service, the worker last.
    """
    health = {PREFECT: _prefect_health, SEAWEEDFS: _s3_health}
    statuses = []
    for name in (*SERVICE_NAMES, WORKER):
        state = _running_state(settings, name)
        if state is None:
            statuses.append(
                ServiceStatus(name, False, "", None, log_path(settings, name), "not running")
            )
            continue
        if name == WORKER:
            # A heartbeat within two of its 30 s intervals.
            healthy = worker_healthy(settings, time.time() - 65)
        else:
            healthy = health[name](state.url)
        statuses.append(
            ServiceStatus(
                name,
                healthy,
                state.url,
                state.pid,
                log_path(settings, name),
                "healthy" if healthy else "running, not answering",
            )
        )
    return statuses


def stop_service(state: ServiceState, grace: float) -> None:
    """SIGTERM the service's process group; SIGKILL it after ``grace`` seconds."""
    try:
        os.killpg(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and is_alive(state.pid, state.command):
        time.sleep(0.2)
    if is_alive(state.pid, state.command):
        logger.warning("%s did not stop within %.0f s; killing it", state.name, grace)
        try:
            os.killpg(state.pid, signal.SIGKILL)
        except ProcessLookupError:
            return


def services_down(settings: Settings, grace: float = 20.0) -> list[str]:
    """Stop the local services that ``up`` started (by recorded pid and process group).

    Args:
        settings: platform settings.
        grace: seconds to wait after SIGTERM before SIGKILL.

    Returns:
        Names of the services that were stopped.
    """
    # The worker first: it must not pick up a run while the server goes away.
    stopped = [WORKER] if worker_down(settings, grace) else []
    for name in SERVICE_NAMES:
        state = _running_state(settings, name)
        if state is not None:
            stop_service(state, grace)
            stopped.append(name)
        _state_path(settings, name).unlink(missing_ok=True)
    return stopped


def worker_name(settings: Settings) -> str:
    """The name the platform's worker reports to the Prefect server."""
    return f"fer-worker-{socket.gethostname()}-{settings.prefect_port}"


def worker_command(
    settings: Settings, with_healthcheck: bool = False, base_job_template: Path | None = None
) -> list[str]:
    """``prefect worker start`` on the platform's pool, under the platform's name.

    Args:
        settings: the pool (``FER_WORK_POOL``, ``FER_WORK_POOL_TYPE``) and the server.
        with_healthcheck: serve Prefect's worker health endpoint (``/health`` on
            ``PREFECT_WORKER_WEBSERVER_PORT``) for a container's probes.
        base_job_template: the template a missing pool is created with.
    """
    command = [
        _executable("prefect"),
        "worker",
        "start",
        "--pool",
        settings.work_pool,
        "--type",
        settings.work_pool_type,
        "--name",
        worker_name(settings),
    ]
    if with_healthcheck:
        command.append("--with-healthcheck")
    if base_job_template is not None:
        command += ["--base-job-template", str(base_job_template)]
    return command


def worker_healthy(settings: Settings, since: float) -> bool:
    """Whether our worker has heartbeat to the server since ``since`` (a Unix time).

    The server keeps listing a stopped worker as online for a while, so an older heartbeat
    under the same name does not count.
    """
    try:
        response = httpx.post(
            f"{settings.prefect_url}/work_pools/{settings.work_pool}/workers/filter",
            json={},
            timeout=5,
        )
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    name = worker_name(settings)
    for worker in response.json():
        beat = worker.get("last_heartbeat_time")
        if worker.get("name") == name and beat and worker.get("status") == "ONLINE":
            if datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp() >= since:
                return True
    return False


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment of the worker and its flow runs: the Prefect API and every FER_ setting.

    Args:
        settings: platform settings.
    """
    env = {
        "PREFECT_API_URL": settings.prefect_url,
        # Cached task results (the validation cache) live under the platform home.
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(settings.home_dir / "prefect" / "storage"),
        "PREFECT_LOGGING_EXTRA_LOGGERS": "model,validation,infra",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    # Flow runs see exactly the settings `fer up` was started with, wherever .env was.
    for name, value in settings.model_dump().items():
        if value is not None:
            secret = getattr(value, "get_secret_value", None)
            env[f"FER_{name.upper()}"] = str(secret() if secret else value)
    return env


def worker_up(settings: Settings, timeout: float = 120.0) -> ServiceStatus:
    """Start a Prefect process worker on ``FER_WORK_POOL``, or reuse the running one.

    It runs the deployments' flow runs as child processes; ``fer services down`` stops it.

    Args:
        settings: platform settings (Prefect API, work pool, home).
        timeout: seconds to wait until the server lists the worker as online.

    Returns:
        The worker's status.

    Raises:
        ServiceError: if the Prefect server is not reachable or the worker does not come up.
    """
    if not _prefect_health(settings.prefect_url.removesuffix("/api")):
        raise ServiceError(
            f"no Prefect server answers at {settings.prefect_url}; run `fer services up` first"
        )
    state = _running_state(settings, WORKER)
    note = "already running"
    if state is None:
        command = worker_command(settings)
        process = spawn_service(settings, WORKER, command, worker_env(settings))
        state = ServiceState(
            WORKER,
            process.pid,
            settings.prefect_port,
            settings.prefect_url,
            command,
            started_at=time.time(),
        )
        _write_state(settings, state)
        started = state.started_at - 1
        wait_or_stop(lambda: worker_healthy(settings, started), state, settings, timeout, process)
        note = "started"
    return ServiceStatus(WORKER, True, state.url, state.pid, log_path(settings, WORKER), note)


def worker_down(settings: Settings, grace: float = 20.0) -> bool:
    """Stop the worker that ``worker_up`` started; runs it started are interrupted.

    Args:
        settings: platform settings.
        grace: seconds to wait after SIGTERM before SIGKILL.

    Returns:
        Whether a worker was running.
    """
    state = _running_state(settings, WORKER)
    if state is not None:
        stop_service(state, grace)
    _state_path(settings, WORKER).unlink(missing_ok=True)
    return state is not None
