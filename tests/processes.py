"""Processes the fault tests stop and start: a private PostgreSQL cluster, and the collector or
gateway run by the ``codelift`` command.

The shared PostgreSQL server is never stopped: other test runs use it. The private cluster is
made with ``initdb`` in a temporary folder, listens on a free loopback port, and is the only one
these tests stop, crash and restart.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from core.http_service import wait_until_healthy

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: install the PostgreSQL server binaries")
    return found


class PrivateCluster:
    """A throw-away PostgreSQL cluster (trust auth, loopback only) that tests may stop.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._as_user, *args], check=True, capture_output=True, timeout=START_TIMEOUT_S
        )

    def init(self) -> None:
        """Make the cluster's files."""
        if self._as_user:
            shutil.chown(self.root, user="postgres")
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``immediate`` is a crash (recovery from the WAL on the next start)."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started private cluster, stopped and deleted on exit."""
    root = Path(tempfile.mkdtemp(prefix="codelift-pg-"))
    cluster = PrivateCluster(root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


class ServiceProcess:
    """``codelift <command>`` in a child process on a fixed loopback port.

    The port is given as ``--port``, or, with ``port_option=False``, left to the service's
    settings (its environment), which must then name the same port.
    """

    def __init__(
        self,
        command: str,
        env: Mapping[str, str],
        *,
        port: int,
        log: Path,
        port_option: bool = True,
    ) -> None:
        self.command = command
        self.port = port
        self._port_args = ["--port", str(port)] if port_option else []
        self.url = f"http://127.0.0.1:{port}"
        # Named, like every test's (an unset one is production); ``env`` may name another.
        self._env = {**os.environ, "CODELIFT_ENVIRONMENT": "test", **env}
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait until ``/healthz`` answers."""
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "codelift", self.command, *self._port_args],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        failure = wait_until_healthy(
            self.process, f"{self.url}/healthz", timeout_s=START_TIMEOUT_S, poll_s=0.05
        )
        if failure is not None:
            raise RuntimeError(f"{self.command} {failure}: {self._log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, in-flight requests die with the process."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss_kib(self) -> tuple[int, int]:
        """(resident memory now, its peak so far) in KiB, from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            fields[name] = value.split()[0] if value.split() else "0"
        return int(fields["VmRSS"]), int(fields["VmHWM"])


@contextlib.contextmanager
def service_process(
    command: str,
    env: Mapping[str, str],
    *,
    log: Path,
    port: int | None = None,
    port_option: bool = True,
) -> Iterator[ServiceProcess]:
    """A started ``codelift <command>``, stopped on exit."""
    service = ServiceProcess(
        command, env, port=port or free_port(), log=log, port_option=port_option
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()
