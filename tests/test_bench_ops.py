"""experiments/bench_ops.py on the CPU with tiny settings: the table's columns, the JSON and its byte model."""

from __future__ import annotations

import json

from tests.test_eval_edits_stats import load_script


def test_bench_ops_tiny_cpu_run_writes_json(tmp_path, capsys):
    bench = load_script("bench_ops")
    out = tmp_path / "bench.json"
    args = ["--device", "cpu", "--max-res", "8", "--batch", "1", "--synthesis-res", "8", "--synthesis-batch", "1,2",
            "--repeats", "1", "--warmup", "0", "--threads", "1", "--out", str(out)]
    assert bench.main(args) == 0
    text = capsys.readouterr().out
    assert "copy ms" in text and "fp16 split: not measured" in text
    report = json.loads(out.read_text())
    assert report["device"].startswith("CPU") and report["impls"] == ["ref"]
    rows = {(r["op"], r["pass"]): r for r in report["rows"]}
    assert len(rows) == 8
    lrelu = rows[("bias_act lrelu", "fwd")]
    n = 1 * 512 * 8 * 8
    assert lrelu["bytes"] == 2 * n * 4 and rows[("bias_act lrelu", "fwd+bwd")]["bytes"] == 5 * n * 4
    blur = rows[("upfirdn2d blur", "fwd+bwd")]
    assert blur["bytes"] == 2 * (512 * 9 * 9 + 512 * 8 * 8) * 4
    for r in report["rows"]:
        assert r["copy_ms"] > 0 and r["ref_ms"] > 0 and r["cuda_ms"] is None and r["auto"] == "ref"
        assert abs(r["ref_copy_frac"] - r["copy_ms"] / r["ref_ms"]) < 1e-12
        assert str(r["bytes"]) in report["copies_ms"] or str(r["bytes"] - 1) in report["copies_ms"]
    assert [(s["precision"], s["batch"]) for s in report["synthesis"]] == [("fp32", 1), ("fp32", 2)]
    assert all(s["impls"]["ref"]["fwdbwd_ms"] > 0 for s in report["synthesis"])


def test_bench_ops_rejects_a_bad_device(tmp_path, capsys):
    bench = load_script("bench_ops")
    assert bench.main(["--device", "banana", "--out", str(tmp_path / "x.json")]) == 2
    assert capsys.readouterr().err.startswith("error: --device 'banana' is not a device")
    assert not (tmp_path / "x.json").exists()
