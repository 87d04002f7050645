"""A throw-away PostgreSQL cluster for tests: initdb in a temp folder, pg_ctl start/stop
(as the postgres user when run as root), a Unix socket only."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _psycopg() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


class Cluster:
    def __init__(self, base: Path) -> None:
        self.bin = Path(_BIN[-1]).parent
        self.base = base
        self.data = base / "data"
        self.port = 50000 + os.getpid() % 10000
        self.url = f"postgresql://postgres@/postgres?host={base}&port={self.port}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{c}'" for c in cmd)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        opts = f"-k {self.base} -p {self.port} -c listen_addresses= -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w",
                  "-o", opts, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


