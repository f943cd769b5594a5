"""The benchmark runs end to end and reports what the performance page shows; it never
asserts a speed (timings belong to the benchmark, not to tests)."""
import json

import pytest
import torch

from hypernas import bench
from hypernas.fast import kernels

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def test_bench_writes_its_table_and_speedup_line(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = bench.main(["--experiments", "exp1", "--windows", "1", "--steps", "1",
                       "--threads", "1", "--no-memory", "--no-family", "--output", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("speedup: ") and lines[-1].endswith("x")
    saved = json.loads(out.read_text())
    r = saved["rows"][0]
    assert r["experiment"] == "exp1" and len(rows) == 1
    # the two implementations being timed compute the same function: equal in float64,
    # and within float32 rounding in the precision they are timed in
    assert r["max_abs_diff_float64"] < 1e-9
    assert r["max_rel_diff"] < 1e-4
    assert float(lines[-1].split()[1].rstrip("x")) == pytest.approx(r["speedup"], abs=0.01)
    for key in ("fast_img_s", "reference_img_s", "fast_gflops", "fast_saved_MB",
                "derived_eval_img_s", "fast_page_faults_per_step"):
        assert r[key] >= 0, key
    # GFLOP/s count the same work (the function's) for both: their ratio is the speedup;
    # the fast supernet's own count has extra multiplies (pooling as a convolution), never fewer
    assert r["fast_gflops"] / r["reference_gflops"] == pytest.approx(r["speedup"], rel=1e-9)
    assert r["flops"] == r["reference_counted_flops"] <= r["fast_counted_flops"]
    assert 0 < saved["derive_and_evaluate_s"] and "commit" in saved["provenance"]
    assert saved["conv_ceiling_bf16_gflops"] is None or saved["conv_ceiling_bf16_gflops"] > 0
    # the kernels' A/B: the same supernet without them, timed alongside
    assert r["kernels"] == saved["kernels"] == (kernels.extension() is not None)
    if r["kernels"]:
        assert r["kernels_gain"] == pytest.approx(r["fast_img_s"] / r["fast_no_kernels_img_s"], rel=1e-9)
        assert "no-kernels img/s" in "\n".join(lines)


def test_memory_setting_comparison_runs_both_settings():
    res = bench.memory_setting_effect(threads=1, steps=1)
    assert res["retained"]["retained"] is True and res["returned"]["retained"] is False
    for v in res.values():
        assert v["train"]["img_s"] > 0 and v["derived_eval"]["img_s"] > 0


@pytest.mark.slow
def test_family_time_measures_members_under_the_sweep_protocol():
    fam = bench.family_time(torch.device("cpu"), sample=1)
    assert fam["per_member_s"] > 0 and fam["members"] > 1
    assert fam["family_estimate_s"] == pytest.approx(fam["per_member_s"] * fam["members"])
    # the arithmetic: needed rate = FLOPs of all members / (2 workers x 300 s)
    assert fam["needed_gflops_per_worker_for_5_min"] == pytest.approx(
        fam["flops_per_image"] * fam["images_per_member"] * fam["members"] / 600 / 1e9)
    assert 0 < fam["achieved_gflops_per_worker"] < 1e4
