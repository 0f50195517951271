"""Every script in ``experiments/`` answers ``--help`` with exit status 0 (so none has rotted against the package).

The Python scripts run in one subprocess (torch is imported once), each as ``__main__`` with
``--help``; the shell script runs on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"

# Runs each script given on the command line as __main__ with --help; prints {script: exit status}.
_DRIVER = """
import contextlib, io, json, runpy, sys
from pathlib import Path
status = {}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    sys.path.insert(0, str(Path(script).parent))  # as when the script runs from experiments/
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - report any failure as this script's
        code, out = 1, io.StringIO(f"{type(exc).__name__}: {exc}")
    status[Path(script).name] = [code, out.getvalue()[:400]]
    sys.path.pop(0)
print(json.dumps(status))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_every_python_script_in_experiments_answers_help():
    scripts = sorted(EXPERIMENTS.glob("*.py"))
    assert scripts, "no scripts found in experiments/"
    proc = subprocess.run([sys.executable, "-c", _DRIVER, *map(str, scripts)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(status) == [s.name for s in scripts]
    failed = {name: text for name, (code, text) in status.items() if code != 0}
    assert not failed, f"--help failed: {failed}"
    empty = [name for name, (_, text) in status.items() if "usage" not in text.lower()]
    assert not empty, f"--help printed no usage: {empty}"


def test_every_shell_script_in_experiments_answers_help():
    for script in sorted(EXPERIMENTS.glob("*.sh")):
        proc = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
        assert "usage" in proc.stdout.lower(), f"{script.name} --help printed no usage"
