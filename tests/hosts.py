"""Worker "hosts" for the distributed test and benchmark: each a `qcluster` process tree with
its own data directory, upload directory and module cache, sharing only what real machines
share — PostgreSQL, the Redis broker and the keys from the environment — and, where the
machine allows it, its own network namespace with a veth link to the test's addresses.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.workers import Cluster

log = logging.getLogger(__name__)


def shared_keys() -> dict[str, str]:
    """The secrets every host must be given: this process's, as production takes them."""
    return {
        "SECRET_KEY": settings.SECRET_KEY,
        "CUSTODIAL_KEY_RING": ",".join(settings.CUSTODIAL_KEY_RING),
        "WEBHOOK_KEY_RING": ",".join(settings.WEBHOOK_KEY_RING),
        "RECEIPT_SIGNING_KEYS": ",".join(settings.RECEIPT_SIGNING_KEYS),
        "RECEIPT_SIGNING_KEY": "",
    }


class Host(Cluster):
    """One machine: its two `qcluster` trees; `kill()` SIGKILLs all of it, `start()` boots it
    again with the same data directory (a reboot, the compiled-module cache kept)."""

    def __init__(
        self,
        name: str,
        root: Path,
        *,
        redis_url: str,
        database_url: str | None = None,
        netns: str | None = None,
        workers: int = 1,
        short_limits: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(workers, short_limits=short_limits, **(extra_env or {}))
        self.name = name
        self.netns = netns
        data_dir = root / name
        self.env.update(
            {
                **shared_keys(),
                **(extra_env or {}),
                "DATA_DIR": str(data_dir),
                "MEDIA_ROOT": str(data_dir / "media"),
                "WASM_CACHE_DIR": str(data_dir / "wasm-cache"),
                "BINARY_STORAGE": "database",
                "REDIS_URL": redis_url,
                "HOSTNAME": name,
            }
        )
        if database_url:
            self.env["DATABASE_URL"] = database_url

    def command(self) -> list[str]:
        command = super().command()
        return ["ip", "netns", "exec", self.netns, *command] if self.netns else command

    def pause(self) -> None:
        """SIGSTOP the whole tree: a machine that stalls (swapping, a VM paused)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)


def database_address() -> tuple[str, int]:
    db = connection.settings_dict
    return db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)


def database_url_via(host: str, port: int) -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgresql://{auth}@{host}:{port}/{db['NAME']}"


class Namespaces:
    """A network namespace per host, joined to this one by a veth pair (10.77.N.1 here,
    10.77.N.2 there). Inside, the host reaches only what listens on 10.77.N.1: forwarders to
    PostgreSQL and Redis. `available` is False (with `reason`) where the machine refuses."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.names = [f"axhost{os.getpid() % 10000}-{i}" for i in range(count)]
        self.reason = ""
        self.available = False
        self.forwarder: subprocess.Popen[str] | None = None

    def gateway(self, index: int) -> str:
        return f"10.77.{index + 1}.1"

    def setup(self) -> bool:
        if os.geteuid() != 0 or not shutil.which("ip"):
            self.reason = "needs root and iproute2 (`ip`)"
            return False
        try:
            for index, name in enumerate(self.names):
                outside, inside = f"axv{index}o{os.getpid() % 1000}", f"axv{index}i"
                for command in (
                    f"ip netns add {name}",
                    f"ip link add {outside} type veth peer name {inside}",
                    f"ip link set {inside} netns {name}",
                    f"ip addr add {self.gateway(index)}/30 dev {outside}",
                    f"ip link set {outside} up",
                    f"ip -n {name} addr add 10.77.{index + 1}.2/30 dev {inside}",
                    f"ip -n {name} link set {inside} up",
                    f"ip -n {name} link set lo up",
                ):
                    subprocess.run(command.split(), check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as error:
            self.reason = f"`{' '.join(error.cmd)}` failed: {error.stderr.strip()}"
            self.teardown()
            return False
        self.available = True
        return True

    def forward(self, ports: list[int]) -> None:
        """Make each loopback port reachable on every gateway address (same port)."""
        routes = [
            f"{self.gateway(index)}:{port}=127.0.0.1:{port}"
            for index in range(self.count)
            for port in ports
        ]
        script = Path(__file__).resolve().parent / "forwarder.py"
        self.forwarder = subprocess.Popen(
            [sys.executable, str(script), *routes], stdout=subprocess.PIPE, text=True
        )
        assert self.forwarder.stdout is not None
        if self.forwarder.stdout.readline().strip() != "ready":
            raise RuntimeError("the TCP forwarder did not start")

    def teardown(self) -> None:
        if self.forwarder is not None:
            self.forwarder.kill()
            self.forwarder.wait(timeout=10)
            self.forwarder = None
        for name in self.names:
            # Deleting the namespace deletes its end of the veth pair, and so both ends.
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
