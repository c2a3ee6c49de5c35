"""schemas/ and queries/ ship inside the wheel and resolve the same way as from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_installed_wheel_finds_schemas_and_statements(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("headdb-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import headdb.resources as r, headdb.warehouse.statements as s;"
        "print(r.schemas_dir());"
        "assert (r.schemas_dir() / '0001_init.sql').is_file();"
        "assert sorted(p.name for p in r.queries_dir().glob('*.sql')) == "
        f"{sorted(p.name for p in (ROOT / 'queries').glob('*.sql'))!r};"
        "assert s.sql('warehouse', 'insert_run')"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout
