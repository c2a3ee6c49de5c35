"""The README's query catalogue names every packaged query, and the reports it mentions exist."""
from __future__ import annotations

import re
from pathlib import Path

from headdb.warehouse.queries import catalogue
from headdb.reports import REPORTS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_lists_every_packaged_query():
    listed = set(re.findall(r"^\| `(\w+)` \|", README, re.MULTILINE))
    assert set(catalogue().names()) <= listed, set(catalogue().names()) - listed


def test_reports_named_in_readme_exist():
    for name in re.findall(r"headdb report (\w+)", README):
        assert name in REPORTS
