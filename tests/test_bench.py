"""The benchmark suite's ``--quick`` mode runs, every row produces a number, and pixrank's
outputs agree with each reference's (same GEMM result within tolerance, same layer outputs
and gradients, same top-k ids, HNSW: the same ids as raw hnswlib on the same graph). Never a speed.

The quick suite runs once per session (``python -m bench --quick --threads 1,2 --out
<tmp>``, about a minute on 2 cores) and each test inspects its rows. Rows against PyTorch
or FAISS are skipped where those (the ``bench`` extra) are not installed; numpy and
hnswlib rows always run.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import GROUPS  # noqa: E402
from bench.common import NotAvailable, check_close, check_topk_ids, paired_time  # noqa: E402
from bench.run import child_env  # noqa: E402


@pytest.fixture(scope="session")
def quick(tmp_path_factory):
    """Run ``python -m bench --quick`` once; returns (results dict, output folder)."""
    out = tmp_path_factory.mktemp("bench-quick")
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--threads", "1,2", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    path = out / "results.json"
    assert path.exists(), f"no results.json; exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    with open(path) as f:
        res = json.load(f)
    res["_proc"] = proc
    return res, out


def _rows(res, group, ref):
    rows = [r for results in res["groups"][group] for r in results["rows"] if ref in r["refs"]]
    assert rows, f"no {group} rows against {ref}"
    return rows


def _assert_numbers(rows, ref):
    for r in rows:
        where = f"{r['group']} / {r['row']} / {r['threads']} thr vs {ref}: notes {r['notes']}"
        assert r["pixrank_s"] is not None and math.isfinite(r["pixrank_s"]) and r["pixrank_s"] > 0, where
        t = r["refs"][ref]
        assert t is not None and math.isfinite(t) and t > 0, where
        assert r["ratios"][ref] is not None and r["ratios"][ref] > 0, where
        assert not any(n.startswith("not available") or "failed" in n for n in r["notes"]), where


def _assert_checks(rows, ref):
    for r in rows:
        c = r["check"].get(ref)
        assert c is not None, f"{r['row']} ({r['threads']} thr): no output check against {ref}"
        assert c["ok"], f"{r['row']} ({r['threads']} thr) vs {ref}: {c['detail']}"


def test_quick_suite_ran_every_group_without_error(quick):
    res, out = quick
    assert res["quick"] is True
    assert set(res["groups"]) == set(GROUPS)
    for g, results in res["groups"].items():
        for child in results:
            assert child.get("error") is None, f"{g}/{child['profile']}: {child['error']}"
            assert child["rows"], f"{g}/{child['profile']}: no rows"
            for r in child["rows"]:
                assert r["threads"] in (1, 2)
    assert res["_proc"].returncode == 0, res["_proc"].stderr[-3000:]


def test_report_and_plots_written(quick):
    res, out = quick
    md = (out / "BENCHMARKS.md").read_text()
    for title in ("GEMM", "Layers", "Training", "Exact cosine top-10", "HNSW", "Machine", "fp32 peak",
                  "OPENBLAS_CORETYPE", "python -m bench --quick"):
        assert title in md, title
    assert "MISMATCH" not in md
    pytest.importorskip("matplotlib")
    for png in ("gemm.png", "hnsw.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png


def test_numpy_rows_ran_with_openblas_vars_removed(quick):
    res, _ = quick
    for g in ("gemm", "ranking"):
        numpy_children = [c for c in res["groups"][g] if c["profile"] == "numpy"]
        assert numpy_children, g
        for c in numpy_children:
            assert c["meta"]["openblas_env"] == {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}
            arch = [b.get("architecture") for b in c["meta"]["blas"] if b.get("internal_api") == "openblas"]
            assert arch and all(arch), "the OpenBLAS kernel numpy ran is recorded"


def test_child_env_removes_openblas_vars_only_for_numpy():
    base = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "HOME": "/x"}
    env = child_env("numpy", base)
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env and env["HOME"] == "/x"
    env = child_env("machine", base)
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["OPENBLAS_L2_SIZE"] == "1048576"
    assert ROOT in env["PYTHONPATH"].split(os.pathsep)
    assert base == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "HOME": "/x"}


@pytest.mark.parametrize("group,ref,module", [
    ("gemm", "numpy", None),
    ("gemm", "torch", "torch"),
    ("layers", "torch", "torch"),
    ("ranking", "numpy", None),
    ("ranking", "torch", "torch"),
    ("ranking", "faiss", "faiss"),
    ("hnsw", "hnswlib", None),
    ("hnsw", "faiss", "faiss"),
    ("training", "torch", "torch"),
])
def test_rows_have_numbers_and_agree(quick, group, ref, module):
    if module:
        pytest.importorskip(module)
    res, _ = quick
    rows = _rows(res, group, ref)
    _assert_numbers(rows, ref)
    if (group, ref) == ("hnsw", "faiss"):
        # FAISS's HNSW is another implementation: its recall is reported, not compared
        for r in rows:
            if r["unit"] != "build":
                assert 0 <= r["extra"]["recall"]["faiss"] <= 1
        return
    if group == "hnsw":
        rows = [r for r in rows if r["unit"] != "build"]
    _assert_checks(rows, ref)


def test_gemm_rows_cover_the_quick_shapes_and_report_flops(quick):
    res, _ = quick
    rows = _rows(res, "gemm", "numpy")
    shapes = {tuple(r["extra"]["shape"]) for r in rows}
    assert shapes == {(64, 64, 64), (128, 128, 128), (128, 200, 60)}
    for r in rows:
        m, k, n = r["extra"]["shape"]
        assert r["flops"] == 2 * m * k * n
        assert r["check"]["numpy"]["rel_err"] < 1e-4


def test_training_accuracy_above_chance(quick):
    pytest.importorskip("torch")
    res, _ = quick
    for r in _rows(res, "training", "torch"):
        acc = r["extra"]["accuracy"]
        assert acc["pixrank"] > 0.2 and acc["torch"] > 0.2, acc


def test_hnsw_recall_matches_raw_hnswlib(quick):
    """pixrank and raw hnswlib query the same saved graph: identical ids, identical recall."""
    res, _ = quick
    rows = [r for r in _rows(res, "hnsw", "hnswlib") if r["unit"] != "build"]
    assert {r["extra"]["ef"] for r in rows} == {10, 50}
    for r in rows:
        rec = r["extra"]["recall"]
        assert r["check"]["hnswlib"]["ok"], (r["row"], r["check"])
        assert rec["pixrank"] == rec["hnswlib"], (r["row"], rec)
        assert rec["pixrank"] > 0.5, (r["row"], rec)
        own = r["extra"]["recall_own_build"]  # each side's own fresh build: the same quality
        assert abs(own["pixrank"] - own["hnswlib"]) <= 0.03, (r["row"], own)


def test_hnsw_builds_are_paired_and_the_1_thread_graphs_identical(quick):
    res, _ = quick
    builds = [r for r in _rows(res, "hnsw", "hnswlib") if r["unit"] == "build"]
    for kind in ("gaussian", "clustered"):
        mine = [r for r in builds if r["extra"]["kind"] == kind]
        assert {r["threads"] for r in mine} == {1, 2}, [(r["row"], r["threads"]) for r in mine]
        for r in mine:
            assert r["extra"]["repeats"] >= 1 and len(r["samples"]["pixrank"]) == r["extra"]["repeats"]
            assert len(r["samples"]["hnswlib"]) == r["extra"]["repeats"]
        one = [r for r in mine if r["threads"] == 1]
        assert len(one) == 1 and one[0]["check"]["hnswlib"]["ok"], one[0]["check"]


def test_cli_rejects_an_unknown_group():
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown group" in proc.stderr and "gemm" in proc.stderr


# ---------------------------------------------------------------------- harness units


def test_paired_time_medians_alternation_and_unavailable_side():
    calls = []

    def a():
        calls.append("a")

    def b():
        calls.append("b")

    def c():
        raise NotAvailable("library missing")

    out = paired_time({"a": a, "b": b, "c": c}, repeats=4, warmup=1, min_sample_s=0.0)
    assert out["c"] == {"error": "not available: library missing"}
    assert len(out["a"]["samples"]) == 4 and len(out["b"]["samples"]) == 4
    assert out["a"]["median_s"] >= 0
    # warm-up a, b; then a b, b a, a b, b a
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    with pytest.raises(ValueError, match="repeats"):
        paired_time({"a": a}, repeats=0)


def test_check_close_and_topk_ids_with_ties():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5))
    assert check_close("y", x + 1e-9, x, 1e-6)["ok"]
    assert not check_close("y", x + 1e-2, x, 1e-6)["ok"]
    assert not check_close("y", x[:3], x, 1e-6)["ok"]
    db = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = np.array([[1.0, 0.1]])
    same = check_topk_ids("ids", [[0, 1]], [[0, 1]], q, db)
    assert same["ok"] and same["ids_equal"] == 1.0
    tie = check_topk_ids("ids", [[1, 0]], [[0, 1]], q, db)  # rows 0 and 1 are identical: a tie
    assert tie["ok"] and tie["ids_equal"] == 0.0
    wrong = check_topk_ids("ids", [[0, 2]], [[0, 1]], q, db)
    assert not wrong["ok"]


def test_settle_pause_only_at_two_threads_and_longer_with_numpy(monkeypatch):
    from bench import common
    monkeypatch.delenv("PIXRANK_BENCH_SETTLE_S", raising=False)
    monkeypatch.setitem(common._THREADS, "n", 1)
    assert common.settle_seconds({"pixrank": None, "numpy": None}) == 0.0
    monkeypatch.setitem(common._THREADS, "n", 2)
    assert common.settle_seconds({"pixrank": None, "numpy": None}) == common.SETTLE_BLAS_S
    assert common.settle_seconds({"pixrank": None, "torch": None}) == common.SETTLE_OMP_S
    # OpenBLAS's idle workers spin 2^28 TSC ticks (~0.1 s at 2.8 GHz): the pause must outlast that
    assert common.SETTLE_BLAS_S >= 2 ** 28 / 2.8e9
    monkeypatch.setenv("PIXRANK_BENCH_SETTLE_S", "0")
    assert common.settle_seconds({"numpy": None}) == 0.0
    monkeypatch.setenv("PIXRANK_BENCH_SETTLE_S", "-1")
    with pytest.raises(ValueError, match="PIXRANK_BENCH_SETTLE_S"):
        common.settle_seconds()


def test_paired_time_sleeps_before_every_sample_at_two_threads(monkeypatch):
    from bench import common
    monkeypatch.setitem(common._THREADS, "n", 2)
    monkeypatch.setenv("PIXRANK_BENCH_SETTLE_S", "0.01")
    slept = []
    monkeypatch.setattr(common.time, "sleep", lambda s: slept.append(s))
    out = paired_time({"a": lambda: None, "b": lambda: None}, repeats=3, warmup=1, min_sample_s=0.0)
    assert len(out["a"]["samples"]) == 3 and slept == [0.01] * 6


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_torch_model_starts_from_pixrank_weights(kind):
    torch = pytest.importorskip("torch")
    from bench import training
    from pixrank import utils
    from pixrank.apps.train_cmd import build_model
    utils.set_random_seed(3)
    pm = build_model(kind)
    tm = training.torch_model(torch, kind)
    training.copy_pixrank_weights(torch, tm, pm, kind)
    x = np.random.default_rng(4).random((5, 28, 28, 1), dtype=np.float32)
    want = pm.predict(x, batch_size=5)
    with torch.no_grad():
        got = torch.softmax(tm(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))), 1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="copy_pixrank_weights"):
        training.copy_pixrank_weights(torch, training.torch_model(torch, "mlp" if kind == "cnn" else "cnn"), pm, kind)


def test_training_rows_share_start_and_batches(quick):
    pytest.importorskip("torch")
    res, _ = quick
    for r in _rows(res, "training", "torch"):
        assert r["extra"]["shared_init"], r["notes"]
        loss = r["extra"]["train_loss"]
        # the same weights and batches: the two implementations' training losses agree closely
        assert abs(loss["pixrank"] - loss["torch"]) <= 0.01 * loss["torch"], loss
