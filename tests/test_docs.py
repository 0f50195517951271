"""The README and experiments/RESULTS.md stay what a newcomer needs: short, with working links, and every
result file in experiments/results/ cited by RESULTS.md (the rest lives in git)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "experiments" / "RESULTS.md"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of ``markdown``."""
    heads = re.findall(r"^#+ (.+)$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text.encode()) <= 10_000
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links
    for link in links:
        if link.startswith("http"):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else README
        assert target.exists(), link
        if anchor:
            assert anchor in _anchors(target.read_text()), link


def test_every_result_file_is_cited_by_results_md():
    text = RESULTS.read_text()
    results = ROOT / "experiments" / "results"
    uncited = [p.name for p in results.iterdir() if p.name not in text]
    assert not uncited, f"cite these in experiments/RESULTS.md or git rm them: {uncited}"
