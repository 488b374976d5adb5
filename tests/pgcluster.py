"""Run a command against a throwaway PostgreSQL cluster.

    python tests/pgcluster.py -- pytest -m postgres

Creates a cluster in a temporary directory (fsync off: it only lives for one run),
starts it on a free local port, exports DATABASE_URL, runs the command, then stops
the server and deletes the directory. `initdb` and `postgres` refuse to run as root,
so as root they run as the unprivileged `postgres` user. If the server binaries are
missing and we are root on Debian, they are installed with apt-get.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "deadlock_timeout": "200ms",
}


def find_bindir() -> Path | None:
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if candidates:
        return Path(candidates[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def install_server() -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(
            "PostgreSQL server binaries (initdb, postgres) were not found. Install the "
            "'postgresql' package, or set PG_BINDIR to the directory holding them."
        )
    print("Installing PostgreSQL server binaries with apt-get…", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
        check=True,
        env=env,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        sys.exit("usage: pgcluster.py -- COMMAND [ARGS…]")
    bindir = find_bindir()
    if bindir is None:
        install_server()
        bindir = find_bindir()
        assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="pgcluster-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    log = root / "server.log"
    try:
        subprocess.run(
            as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        options = " ".join(f"-c {key}={value!r}" for key, value in SERVER_SETTINGS.items())
        subprocess.run(
            as_server_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-p {port} {options}",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        url = f"postgresql://postgres@127.0.0.1:{port}/agent_exchange"
        subprocess.run(
            [
                str(bindir / "psql"),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-c",
                "CREATE DATABASE agent_exchange",
            ],
            check=True,
        )
        print(f"PostgreSQL {bindir.parent.name} running on port {port} (throwaway)", flush=True)
        started = time.monotonic()
        result = subprocess.run(argv, env={**os.environ, "DATABASE_URL": url})
        print(f"command finished in {time.monotonic() - started:.1f}s", flush=True)
        return result.returncode
    finally:
        subprocess.run(
            as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
