"""A throwaway PostgreSQL server for the lake tests: Debian's `postgresql` package, unix socket only.

The server listens on no TCP address (listen_addresses=''), only on a socket in its own
temporary folder, so parallel test sessions never clash and nothing outside the machine can
reach it. PostgreSQL refuses to run as root; under root (CI) it runs as the `postgres` user that
the Debian package creates. Durability is switched off (fsync, synchronous_commit): a test
server that loses its data on a power cut costs nothing, and it starts in well under a second.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

INITDB_GLOB = "/usr/lib/postgresql/*/bin/initdb"


def find_bin() -> Path | None:
    """The bin folder of the newest PostgreSQL installed from Debian's package, or one on PATH."""
    found = sorted(glob.glob(INITDB_GLOB), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="headdb-pg-"))
        self.socket_dir = self.root / "sock"
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._databases = 0

    def _run(self, tool: str, *args: str) -> str:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{log}")
        return done.stdout

    def start(self) -> "PostgresServer":
        self.socket_dir.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        settings = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", settings, "start")
        return self

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its libpq connection string."""
        self._databases += 1
        name = name or f"lake{self._databases}"
        self._run("createdb", "-h", str(self.socket_dir), "-U", "postgres", name)
        return self.conninfo(name)

    def conninfo(self, dbname: str) -> str:
        return f"dbname={dbname} host={self.socket_dir} user=postgres"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
