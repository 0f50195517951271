"""The README and experiments/RESULTS.md stay what a newcomer needs: short, with working links, and every
result file in experiments/results/ cited by RESULTS.md (the rest lives in git); the tracked tree small enough
to travel to the GPU machine with the packed weights."""

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


# The GPU machine takes the tracked tree plus the packed generator and LPIPS weights (../shared/gpu/pack,
# about 42.5 MiB) within 64 MiB: a tracked tree over this would stop the prepared GPU run from travelling.
TRACKED_BUDGET = 21 * 1024 * 1024


def test_the_tracked_tree_leaves_room_for_the_gpu_assets():
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    size = sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())
    assert size <= TRACKED_BUDGET, (f"tracked files take {size / 2**20:.1f} MiB, over {TRACKED_BUDGET / 2**20:.0f} MiB: "
                                    "shrink or drop superseded results (grids as modest JPEG/PNG)")
