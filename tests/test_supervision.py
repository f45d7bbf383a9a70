"""Process supervision with real processes: stop signals reach every child and free the port,
a killed collector worker is restarted, a crash loop ends the launcher with exit status 1, a
dashboard on a taken port fails without claiming to serve, and the demo's services stop with it
or, dying, fail it.

Processes are found through /proc (Linux), so no test depends on psutil. Every wait has a
deadline; the file runs in about 50 s (the demo's stack takes 10 to 20 s to start, twice).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tests.processes import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
# Never queried: the dashboard answers its health check without the database.
NO_DATABASE = "postgresql://nobody@127.0.0.1:1/none"

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], what: str, timeout_s: float = STOP_TIMEOUT_S) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: the fields follow its last ")".
    return text.rpartition(")")[2].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            if fields[0] != "Z" and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rpartition(":")[2], 16) == port:
                    inodes.add(inode)
    return inodes


def listens(pid: int, port: int) -> bool:
    """``pid`` holds a socket listening on ``port``."""
    inodes = _listening_inodes(port)
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return False
    return any(
        link[len("socket:[") : -1] in inodes for link in links if link.startswith("socket:[")
    )


def port_free(port: int) -> bool:
    """Nothing listens on the loopback ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def launch(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``args`` in a child of its own, output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Launched processes, killed at the end of the test if it left them running."""
    launched: list[subprocess.Popen[bytes]] = []
    yield launched
    for process in launched:
        if process.poll() is None:
            process.kill()
        process.wait(STOP_TIMEOUT_S)


def codelift(
    reap: list[subprocess.Popen[bytes]], log: Path, *args: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    process = launch([sys.executable, "-m", "codelift", *args], log, env)
    reap.append(process)
    return process


def supervised(
    reap: list[subprocess.Popen[bytes]], tmp_path: Path, body: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """Run ``body`` (Python, with ``core.supervise``'s names imported) in a child, and its log."""
    script = tmp_path / "supervised.py"
    script.write_text(
        "import logging, os, sys, time\n"
        "from core.supervise import Policy, Supervisor, python_process, spawn_command\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "if __name__ == '__main__':\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )
    log = tmp_path / "supervised.log"
    process = launch([sys.executable, str(script)], log, {"PYTHONPATH": str(ROOT)})
    reap.append(process)
    return process, log


# --- the dashboard ------------------------------------------------------------------------------

DASHBOARD_ENV = {"CODELIFT_ENVIRONMENT": "development"}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_the_dashboard_and_frees_its_port(
    stop: signal.Signals, reap: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "dashboard.log"
    cli = codelift(
        reap, log, "dashboard", "--port", str(port), "--database-url", NO_DATABASE,
        env=DASHBOARD_ENV,
    )  # fmt: skip
    wait_for(lambda: "dashboard at" in log.read_text(), "the dashboard", START_TIMEOUT_S)
    [streamlit] = children(cli.pid)
    assert listens(streamlit, port)

    cli.send_signal(stop)

    assert cli.wait(STOP_TIMEOUT_S) == 0, log.read_text()
    wait_for(lambda: not alive(streamlit), "Streamlit to exit")
    assert port_free(port)


def test_the_dashboard_on_a_taken_port_fails_without_printing_a_url(
    reap: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    log = tmp_path / "dashboard.log"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cli = codelift(
            reap, log, "dashboard", "--port", str(port), "--database-url", NO_DATABASE,
            env=DASHBOARD_ENV,
        )  # fmt: skip
        assert cli.wait(START_TIMEOUT_S) == 1
    output = log.read_text()
    assert f"error: port {port} on 127.0.0.1 is already in use" in output
    assert "dashboard at" not in output
    assert "URL:" not in output


def test_a_killed_launcher_takes_its_children_with_it(
    reap: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    if sys.platform != "linux":
        pytest.skip("the parent-death signal is Linux's")
    launcher, log = supervised(
        reap,
        tmp_path,
        """
        with Supervisor("launcher") as supervisor:
            supervisor.start("command", lambda: spawn_command(["sleep", "60"]))
            supervisor.start("python", python_process(time.sleep, 60, name="python"))
            print("both up", flush=True)
            supervisor.wait()
        """,
    )
    wait_for(lambda: "both up" in log.read_text(), "the children", START_TIMEOUT_S)
    started = children(launcher.pid)
    assert len(started) >= 2  # and multiprocessing's resource tracker

    launcher.kill()
    launcher.wait(STOP_TIMEOUT_S)

    wait_for(lambda: not any(alive(pid) for pid in started), "the orphans to exit")


# --- the collector's workers --------------------------------------------------------------------


def test_a_killed_collector_worker_is_restarted_and_serves_again(
    database_url: str, reap: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "collector.log"
    env = {
        "CODELIFT_DATABASE_URL": database_url,
        "CODELIFT_ENVIRONMENT": "test",
        "CODELIFT_COLLECTOR_DB_POOL_MIN": "1",
    }
    cli = codelift(reap, log, "collector", "--port", str(port), "--workers", "2", env=env)

    def serving_workers(without: int | None = None) -> list[int] | None:
        """The two workers listening on the port, once there are two (none of them ``without``)."""
        workers = sorted(pid for pid in children(cli.pid) if listens(pid, port))
        return workers if len(workers) == 2 and without not in workers else None

    first, second = wait_for(serving_workers, "two workers", START_TIMEOUT_S)
    os.kill(first, signal.SIGKILL)

    restarted = wait_for(
        lambda: serving_workers(without=first), "the killed worker's replacement", START_TIMEOUT_S
    )
    assert second in restarted
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    assert "signal SIGKILL" in log.read_text() and "restart 1 in 0.5 s" in log.read_text()

    cli.send_signal(signal.SIGTERM)

    assert cli.wait(STOP_TIMEOUT_S) == 0, log.read_text()
    wait_for(lambda: not any(alive(pid) for pid in restarted), "the workers to exit")
    assert port_free(port)


def test_workers_in_a_crash_loop_end_the_launcher_with_exit_1(
    reap: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    launcher, log = supervised(
        reap,
        tmp_path,
        """
        policy = Policy(
            restart=True, backoff_initial_s=0.05, stable_after_s=30, max_quick_failures=3
        )
        with Supervisor("crashing", policy) as supervisor:
            for i in range(2):
                supervisor.start(f"worker-{i}", python_process(os._exit, 3, name=f"worker-{i}"))
            outcome = supervisor.wait()
        print(f"restarts={supervisor.restarts}", flush=True)
        sys.exit(outcome.exit_code)
        """,
    )

    assert launcher.wait(START_TIMEOUT_S) == 1
    output = log.read_text()
    assert "exited with code 3" in output
    assert "3 failures in a row, giving up" in output
    assert "restart 1 in 0.05 s" in output
    restarts = int(output.rpartition("restarts=")[2].split()[0])
    assert restarts >= 2


def test_a_worker_that_lived_long_enough_starts_its_back_off_over(
    reap: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # Each run outlives stable_after_s: five failures are never "in a row", so never a give-up.
    launcher, log = supervised(
        reap,
        tmp_path,
        """
        policy = Policy(
            restart=True, backoff_initial_s=0.05, stable_after_s=0.2, max_quick_failures=2
        )
        with Supervisor("steady", policy) as supervisor:
            supervisor.start(
                "worker",
                lambda: spawn_command([sys.executable, "-c", "import time; time.sleep(0.3)"]),
            )
            outcome = supervisor.wait()
        print(f"restarts={supervisor.restarts}", flush=True)
        sys.exit(outcome.exit_code)
        """,
    )
    wait_for(lambda: "restart 4 in 0.05 s" in log.read_text(), "four restarts", START_TIMEOUT_S)

    launcher.send_signal(signal.SIGTERM)

    assert launcher.wait(STOP_TIMEOUT_S) == 0, log.read_text()
    assert "giving up" not in log.read_text()


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(
    reap: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    launcher, log = supervised(
        reap,
        tmp_path,
        """
        stubborn = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)"
        )
        with Supervisor("stubborn", Policy(grace_s=0.5)) as supervisor:
            supervisor.start("child", lambda: spawn_command([sys.executable, "-c", stubborn]))
            outcome = supervisor.wait()
        sys.exit(outcome.exit_code)
        """,
    )
    wait_for(lambda: "ready" in log.read_text(), "the child", START_TIMEOUT_S)
    [child] = children(launcher.pid)

    began = time.monotonic()
    launcher.send_signal(signal.SIGINT)

    assert launcher.wait(STOP_TIMEOUT_S) == 0, log.read_text()
    assert 0.4 < time.monotonic() - began < STOP_TIMEOUT_S
    assert not alive(child)
    assert "did not stop in 0.5 s: killing it" in log.read_text()


# --- the demo's stack ---------------------------------------------------------------------------

# The collector and the gateway as `codelift demo` runs them (simulator.stack), with the signal
# handling the demo command installs; the block stands for the demo's minutes of work.
STACK_SCRIPT = """
import sys, time
from pathlib import Path

from codelift.commands.simulate import _interrupt_on_signals
from simulator.demo import DEFAULT_VARIANT, make_keys
from simulator.stack import ServiceFailed, running_stack

if __name__ == "__main__":
    url, log_dir, collector_port, gateway_port = sys.argv[1:]
    _interrupt_on_signals()
    ingest_key, _ = make_keys(url)
    try:
        with running_stack(
            database_url=url,
            ingest_key=ingest_key,
            default_variant=DEFAULT_VARIANT,
            log_dir=Path(log_dir),
            collector_port=int(collector_port),
            gateway_port=int(gateway_port),
        ):
            print("stack up", flush=True)
            time.sleep(60)
    except ServiceFailed as exc:
        print(f"error: {exc}", flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("stopped", flush=True)
        sys.exit(130)
"""


def demo_stack(
    reap: list[subprocess.Popen[bytes]], tmp_path: Path, database_url: str
) -> tuple[subprocess.Popen[bytes], Path, dict[str, int], dict[str, int]]:
    """The launcher of a running stack, its log, and each service's port and pid."""
    ports = {"collector": free_port(), "gateway": free_port()}
    script, log = tmp_path / "stack.py", tmp_path / "stack.log"
    script.write_text(STACK_SCRIPT)
    args = [str(tmp_path / "logs"), str(ports["collector"]), str(ports["gateway"])]
    launcher = launch(
        [sys.executable, str(script), database_url, *args], log, {"PYTHONPATH": str(ROOT)}
    )
    reap.append(launcher)
    wait_for(
        lambda: "stack up" in log.read_text() or launcher.poll() is not None,
        "the stack",
        START_TIMEOUT_S,
    )
    assert "stack up" in log.read_text(), log.read_text()
    pids = {
        name: pid
        for pid in children(launcher.pid)
        for name, port in ports.items()
        if listens(pid, port)
    }
    assert pids.keys() == ports.keys(), children(launcher.pid)
    return launcher, log, ports, pids


def test_sigterm_to_the_demo_stops_its_services_and_frees_their_ports(
    database_url: str, reap: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    launcher, log, ports, pids = demo_stack(reap, tmp_path, database_url)

    launcher.send_signal(signal.SIGTERM)

    assert launcher.wait(STOP_TIMEOUT_S) == 130, log.read_text()
    assert "stopped" in log.read_text()
    assert not children(launcher.pid)
    assert not any(alive(pid) for pid in pids.values())
    assert all(port_free(port) for port in ports.values())


def test_a_service_that_dies_during_the_demo_fails_it_with_the_reason(
    database_url: str, reap: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    launcher, log, ports, pids = demo_stack(reap, tmp_path, database_url)

    os.kill(pids["gateway"], signal.SIGKILL)

    # Well before the block's 60 s sleep ends: the death interrupts it.
    assert launcher.wait(STOP_TIMEOUT_S) == 1, log.read_text()
    assert f"error: the gateway (pid {pids['gateway']}) exited with signal SIGKILL" in (
        log.read_text()
    )
    wait_for(lambda: not alive(pids["collector"]), "the collector to be stopped")
    assert all(port_free(port) for port in ports.values())


def test_the_demo_stops_serving_when_its_dashboard_exits(tmp_path: Path) -> None:
    from dashboard.launch import DashboardFailed, DashboardProcess
    from simulator.demo import serve_until_interrupted

    dashboard = DashboardProcess(
        process=subprocess.Popen(["sh", "-c", "sleep 0.2; exit 3"]), url="http://127.0.0.1:1"
    )
    out = (tmp_path / "demo.out").open("w")

    began = time.monotonic()
    with out, pytest.raises(DashboardFailed, match=r"exited with code 3 while serving"):
        serve_until_interrupted(dashboard, out)

    assert time.monotonic() - began < STOP_TIMEOUT_S
    assert "serving until Ctrl-C" in (tmp_path / "demo.out").read_text()
