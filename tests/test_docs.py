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
        assert name in REPORTS or name in ("study", "list")  # `report study MANIFEST`, `report list`


ROOT = Path(__file__).resolve().parents[1]


def _layout_block() -> str:
    return README.split("## Layout", 1)[1].split("```")[1]


def test_readme_layout_matches_the_package():
    block = _layout_block()
    listed = set(re.findall(r"^  (\w+)/", block, re.MULTILINE))
    subpackages = {p.parent.name for p in (ROOT / "headdb").glob("*/__init__.py")}
    assert listed == subpackages, listed ^ subpackages
    for module in re.findall(r"^  (\w+\.py)", block, re.MULTILINE):
        assert (ROOT / "headdb" / module).is_file(), module
    for top in re.findall(r"^(\w+)/ ", block, re.MULTILINE):
        assert (ROOT / top).is_dir(), top


def test_no_file_cites_a_document_that_is_not_in_the_repository():
    cited = set()
    for path in [
        *ROOT.glob("*.md"),
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("headdb/**/*.py"),
        *ROOT.glob("schemas/*.sql"),
        *ROOT.glob("queries/*.sql"),
        *ROOT.glob("ingest/*.toml"),
        ROOT / "pyproject.toml",
    ]:
        text = path.read_text()
        cited |= set(re.findall(r"\b((?:docs/|benchmarks/)?[A-Za-z][\w-]*\.md)\b", text))
    for name in cited:
        assert any((ROOT / folder / name).is_file() for folder in ("", "docs", "benchmarks")), (
            f"{name} is cited but not in the repository"
        )


def test_manifest_key_lists_name_every_setting():
    """The README's manifest example and the manifest module's docstring list the keys of
    [attribution] and [generation]: every field of the settings models that parse them."""
    from headdb.jobs import manifest
    from headdb.settings import AttributionSettings, GenerationSettings, Sampling

    keys = {
        "attribution": set(AttributionSettings.model_fields),
        "generation": (set(Sampling.model_fields) | set(GenerationSettings.model_fields) | {"k", "limit"})
        - {"sampling", "ks"},
    }
    for section, expected in keys.items():
        readme = re.search(rf"^\[{section}\]\s+# (.+)$", README, re.MULTILINE).group(1)
        assert {k.strip() for k in readme.split(",")} == expected, section
        doc = manifest.__doc__.split(f"[{section}]", 1)[1].split("[", 1)[0]
        assert expected <= set(re.findall(r"\b(\w+)\b", doc)), (section, expected - set(re.findall(r"\b(\w+)\b", doc)))
