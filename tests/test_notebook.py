"""experiments/compose_edits.ipynb runs top to bottom (small settings), so it never rots."""

from __future__ import annotations

import pytest

from tests.helpers import REPO, require_asset, skip_or_fail


@pytest.mark.slow
def test_compose_edits_notebook_executes(tmp_path, monkeypatch):
    try:
        import nbclient
        import nbformat
    except ImportError:
        skip_or_fail("nbclient/nbformat not installed (make env installs them)")
    require_asset("mobilestylegan-ffhq-1024")
    require_asset("lpips-vgg16")
    require_asset("dlib-landmarks-68")
    monkeypatch.setenv("STYLERIG_AU_NB_STEPS", "2")
    monkeypatch.setenv("STYLERIG_AU_NB_OUT", str(tmp_path))
    nb = nbformat.read(REPO / "experiments" / "compose_edits.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    for name in ("astronaut.pt", "compose_grid.png", "astronaut_smile.png", "smile.gif"):
        assert (tmp_path / name).is_file(), name
    # the grid cell displays an image
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
