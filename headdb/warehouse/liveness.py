"""Runs whose process died: a `running` row whose writer no longer exists is `abandoned`.

A run's row records the host and pid of the process that started it. On that host, a pid that
no longer exists means the job died without finishing (kill -9, out of memory, a lost node's
process restarted): nothing of it will ever land. The next writer on the same host marks such a
row `abandoned` (in the transaction that starts its own run), and `headdb runs` shows it so even
before that. A row started on another host is judged by that host's next writer: a pid says
nothing across machines.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from headdb import provenance
from headdb.warehouse.statements import sql

if TYPE_CHECKING:
    from headdb.warehouse.sinks import Session

ABANDONED = "abandoned"


def process_ended(host: str | None, pid: int | None) -> bool:
    """True when (host, pid) names a process of this host that no longer exists."""
    if host != provenance.host() or pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def abandon_dead_runs(s: Session) -> list[int]:
    """Mark this host's `running` rows whose process ended as abandoned (inside transaction `s`)."""
    host = provenance.host()
    dead = [
        (run_id, pid) for run_id, pid in s.rows(sql("warehouse", "running_on_host"), [host]) if process_ended(host, pid)
    ]
    for run_id, pid in dead:
        s.execute(
            sql("warehouse", "abandon_run"),
            [f"abandoned: process {pid} on {host} ended before the run finished (killed?)", run_id],
        )
    return [run_id for run_id, _ in dead]
