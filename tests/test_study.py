"""Tables, verdicts and figures from saved records (synthetic records written here)."""

import json

import numpy as np
import pandas as pd
import pytest

from vaesae import artifacts
from vaesae.analysis import paper, study as st
from vaesae.analysis.figures import write_figures

DEAD_T = (0.0005, 0.001, 0.002, 0.005, 0.01)
SPEC_T = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def _rows(n_epochs, dead_start, dead_end, mig, mse, k_start=500, k_end=50, spec_start=1200, spec_end=330, rng=None):
    rows = []
    for e in range(n_epochs):
        f = e / max(1, n_epochs - 1)
        row = {"epoch": e, "k": round(k_start + (k_end - k_start) * f), "mig": mig + 0.001 * rng.standard_normal(),
               "mse": mse * (1 + 0.01 * rng.standard_normal())}
        dead = dead_start + (dead_end - dead_start) * f + 0.5 * rng.standard_normal()
        for i, t in enumerate(DEAD_T):
            row[f"dead_pct@{t:g}"] = dead + i
        spec = spec_start + (spec_end - spec_start) * f
        for i, t in enumerate(SPEC_T):
            row[f"spec@{t:g}"] = max(0.0, round(spec * (1.5 - t)))
        rows.append(row)
    return pd.DataFrame(rows)


def make_fake_study(root, profile="smoke", seeds=(42, 43, 44), source="procedural", dsprites_dead=34.4, shapes_dead=62.7):
    rng = np.random.default_rng(0)
    for ds, dead, mse in (("dsprites", dsprites_dead, 0.017), ("shapes3d", shapes_dead, 0.039)):
        for seed in seeds:
            base = root / profile / ds / f"seed{seed}"
            runs = {
                "stage2": _rows(1, 1.2, 1.2, 0.15, mse, k_start=500, k_end=500, spec_start=1188, spec_end=1188, rng=rng),
                "topk": _rows(10, 1.5, dead, 0.14, mse, rng=rng),
                "extended": _rows(20, dead, dead + 0.3, 0.14, mse, k_start=50, spec_start=330, spec_end=300, rng=rng),
                "l1": _rows(10, 2, dead * 1.2, 0.2, mse, rng=rng).drop(columns=["k"]).assign(l1_coef=0.01),
                "stage1": pd.DataFrame({"epoch": [0, 1], "loss": [2.0, 1.0]}),
            }
            for run, df in runs.items():
                d = base / run
                d.mkdir(parents=True, exist_ok=True)
                df.to_csv(d / "epochs.csv", index=False)
                (d / "run.json").write_text(json.dumps({"data_source": source, "wall_s": 60.0, "environment": {"device": "cpu"}}))
    return root


def test_tables_and_verdicts_on_paper_like_records(tmp_path):
    make_fake_study(tmp_path)
    s = st.load_study(tmp_path, "smoke")
    assert s.datasets == ["dsprites", "shapes3d"] and s.seeds == [42, 43, 44] and s.sources == {"procedural"}
    tables = st.write_tables(s, tmp_path)
    t1 = tables["table1"]
    assert list(t1["dataset"]) == ["dSprites", "dSprites", "Shapes3D", "Shapes3D"]
    assert "(n=3)" in t1.loc[0, "dead % (ours)"]
    v = tables["verdicts"].set_index("claim")["verdict"]
    assert v["dSprites Top-k dead % at k=50"] == "reproduced"
    assert v["Shapes3D Top-k dead % at k=50"] == "reproduced"
    assert v["L1 kills at least as many neurons as Top-k (dSprites)"] == "reproduced"
    assert v["no recovery with 100 extended epochs (dSprites: 34.4 -> 34.7 %)"] == "reproduced"
    assert v["collapse (dead % at k=50 > at k=500) at every dead threshold (Shapes3D)"] == "reproduced"
    assert v["Shapes3D has 1.8x the dead rate of dSprites (Top-k)"] == "reproduced"
    assert len(tables["table4"]) == 2 * len(SPEC_T) and len(tables["table5"]) == 2 * len(DEAD_T)
    for name in ("verdicts", "table1", "table7"):
        for ext in ("csv", "md", "tex"):
            assert (tmp_path / "smoke" / "tables" / f"{name}.{ext}").is_file()
    assert "\\toprule" in (tmp_path / "smoke" / "tables" / "table1.tex").read_text()
    index = artifacts.read_index(tmp_path / "smoke" / "tables")
    assert [e["name"] for e in index][:2] == ["verdicts", "table1"]
    assert all("procedural" in e["caption"] for e in index)


def test_verdicts_say_not_reproduced_when_numbers_differ(tmp_path):
    make_fake_study(tmp_path, dsprites_dead=5.0, shapes_dead=4.0)
    v = st.verdict_table(st.load_study(tmp_path, "smoke")).set_index("claim")["verdict"]
    assert v["dSprites Top-k dead % at k=50"] == "direction-only"   # 5 % > 1.2 % at k=500, far from 34.4
    assert v["L1 kills at least as many neurons as Top-k (dSprites)"] == "reproduced"
    assert v["Shapes3D has 1.8x the dead rate of dSprites (Top-k)"] == "not reproduced"


def test_missing_runs_are_not_measured(tmp_path):
    make_fake_study(tmp_path, seeds=(42,))
    import shutil

    shutil.rmtree(tmp_path / "smoke" / "shapes3d" / "seed42" / "l1")
    v = st.verdict_table(st.load_study(tmp_path, "smoke")).set_index("claim")["verdict"]
    assert v["Shapes3D L1 dead % at the end of stage 3"] == "not measured"
    assert v["Shapes3D has 2.2x the dead rate of dSprites (L1)"] == "not measured"


def test_verdict_rule_interval_and_tolerance():
    c = next(c for c in paper.CLAIMS if c.id == "t1_dead_dsprites_topk")
    assert paper.verdict(c, [30.0, 40.0, 35.0]) == "reproduced"          # mean 35.0: within 5 points of 34.4
    assert paper.verdict(c, [38.0]) == "reproduced"                      # within 5 points
    # 34.4 inside the n=2 interval (75.9 +- 81) but 41.5 points from the mean: the seeds cannot tell, whatever the
    # direction says
    assert paper.verdict(c, [69.5, 82.3]) == paper.verdict(c, [69.5, 82.3], direction_holds=True) == "inconclusive"
    assert paper.verdict(c, [40.0, 41.0, 40.5], direction_holds=True) == "direction-only"   # interval 39.3-41.7
    assert paper.verdict(c, [80.0, 81.0, 80.5]) == "not reproduced"
    assert paper.verdict(c, [80.0, 81.0, 80.5], direction_holds=True) == "direction-only"
    assert paper.verdict(c, []) == "not measured"


def test_every_figure_is_drawn_with_its_source(tmp_path):
    make_fake_study(tmp_path)
    s = st.load_study(tmp_path, "smoke")
    names = write_figures(s, tmp_path / "figures")
    assert len(names) == 11
    for n in names:
        assert (tmp_path / "figures" / "smoke" / f"{n}.png").stat().st_size > 1000
        assert (tmp_path / "figures" / "smoke" / f"{n}.pdf").is_file()
    assert all("procedural" in e["caption"] for e in artifacts.read_index(tmp_path / "figures" / "smoke"))


def _texts(fig):
    out = [t.get_text() for t in fig.texts]
    if fig._suptitle is not None:
        out.append(fig._suptitle.get_text())
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
        if ax.get_legend() is not None:
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    for leg in fig.legends:
        out += [t.get_text() for t in leg.get_texts()] + [leg.get_title().get_text()]
    return out


@pytest.mark.parametrize("seeds", [(42,), (42, 43, 44)])
def test_figures_speak_words_and_show_a_spread_only_at_n_ge_2(tmp_path, seeds):
    """Issue 18: labels in words (no raw column names), legends outside the panels, "mean ± std" and a band
    only where there are at least two seeds, captions naming what the figure shows and its runs."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from vaesae.analysis import figures as F
    from vaesae.analysis.labels import label

    assert "@" not in label("dead_pct@0.001") and "@" not in label("spec@0.5") and label("dataset_label") == "dataset"
    make_fake_study(tmp_path, seeds=seeds)
    s = st.load_study(tmp_path, "smoke")
    for make in (lambda: F.fig_per_seed(s, "dsprites"), lambda: F.fig_aggregate(s, "dsprites"), lambda: F.fig_cross_dataset(s),
                 lambda: F.fig_topk_vs_l1(s, "dsprites"), lambda: F.fig_extended(s, "dsprites"), lambda: F.fig_thresholds(s, "dsprites")):
        fig = make()
        texts = " | ".join(_texts(fig))
        assert not any(raw in texts for raw in ("dead_pct@", "spec@", "dataset_label", "| mig |", "| mse |")), texts
        assert all(ax.get_legend() is None for ax in fig.axes), "legends sit outside the panels"
        bands = sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)
        if len(seeds) == 1:
            assert "mean ± std" not in texts and bands == 0
        plt.close(fig)
    fig = F.fig_aggregate(s, "dsprites")
    if len(seeds) > 1:
        assert "mean ± std over 3 seeds" in fig._suptitle.get_text()
        assert sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections) == 2
    plt.close(fig)
    write_figures(s, tmp_path / "figures")
    caps = {e["name"]: e["caption"] for e in artifacts.read_index(tmp_path / "figures" / "smoke")}
    assert len(set(c.split(" Runs:")[0] for c in caps.values())) >= 6, "one caption per figure, not one boilerplate"
    assert all("SAE reading literal" in c and f"(n={len(seeds)})" in c for c in caps.values())


def test_k500_is_read_at_both_ends_and_mse_stability_uses_the_warm_up(tmp_path):
    """Issue 18: Table 2 and the stability verdicts name two k = 500 states, the end of stage 2 (SAE not in the
    path) and the end of stage 3's warm-up (Top-k epoch warm − 1, SAE in the path); MSE stability uses the latter."""
    make_fake_study(tmp_path, seeds=(42,))
    for ds in ("dsprites", "shapes3d"):
        d = tmp_path / "smoke" / ds / "seed42" / "topk"
        df = pd.read_csv(d / "epochs.csv")
        df["k"] = [500] * 3 + list(df["k"][3:])
        df.loc[2, "mse"] = 0.5   # the warm-up's last epoch (warm = 3 -> epoch 2)
        df.to_csv(d / "epochs.csv", index=False)
        meta = json.loads((d / "run.json").read_text())
        meta["params"] = {"derived": {"schedule_split": [3, 5, 2]}}
        (d / "run.json").write_text(json.dumps(meta))
    s = st.load_study(tmp_path, "smoke")
    wu = s.warmup_end("dsprites")
    assert wu.epoch.tolist() == [2] and wu.mse.tolist() == [0.5]
    t2 = st.table2(s).set_index(["dataset", "metric"])
    assert ("dSprites", "MSE at k=500, end of stage-3 warm-up (Top-k epoch 2, SAE in the path)") in t2.index
    assert ("dSprites", "MSE at k=500, end of stage 2 (SAE not in the forward path)") in t2.index
    v = st.verdict_table(s)
    row = v[v.claim.str.startswith("MSE stable") & v.claim.str.contains("dSprites")].iloc[0]
    assert row.ours.startswith("from end of stage-3 warm-up (Top-k epoch 2") and "0.5000 →" in row.ours
    assert "end of stage 2" in row.ours and row.verdict == "not reproduced"


def test_the_chosen_reading_is_a_second_study_beside_the_literal_one(tmp_path):
    """SPEC §6: runs of a non-literal reading live in run@reading folders (stage 1 shared); load_study(reading=...)
    reads them under the literal run names, study_readings lists the chosen reading once it has Top-k records, and
    its tables are written beside the literal ones."""
    import shutil

    make_fake_study(tmp_path, profile="smoke", seeds=(42, 43))
    root = tmp_path / "smoke"
    (root / "readings_choice.json").write_text(json.dumps({"chosen": "centred"}))
    assert st.study_readings(tmp_path, "smoke") == ["literal"]   # no centred Top-k records yet
    for ds in ("dsprites", "shapes3d"):
        for seed in (42, 43):
            for run in ("stage2", "topk"):
                shutil.copytree(root / ds / f"seed{seed}" / run, root / ds / f"seed{seed}" / f"{run}@centred")
    assert st.study_readings(tmp_path, "smoke") == ["literal", "centred"]
    lit, cen = (st.load_study(tmp_path, "smoke", reading=r) for r in ("literal", "centred"))
    assert cen.reading == "centred" and {k[2] for k in cen.runs} == {"stage1", "stage2", "topk"}
    assert {k[2] for k in lit.runs} == {"stage1", "stage2", "topk", "extended", "l1"}
    st.write_tables(cen, tmp_path)
    t1 = pd.read_csv(root / "tables" / "table1@centred.csv", dtype=str, keep_default_na=False)
    assert "(n=2)" in t1.loc[0, "dead % (ours)"]
    both = st.side_by_side([lit, cen])
    assert list(both["reading"]) == ["literal"] * 4 + ["centred"] * 4 and both.columns[0] == "reading"
    assert both.loc[both.reading == "centred", "dead % (ours)"].tolist() == t1["dead % (ours)"].tolist()
    # its caption: both readings, every seed, and the commits of the records of both (one centred record's commit)
    topk_c = root / "dsprites" / "seed43" / "topk@centred" / "run.json"
    topk_c.write_text(json.dumps({**json.loads(topk_c.read_text()), "git_commit": "fedcba9876"}))
    cap = st.side_by_side_caption([lit, st.load_study(tmp_path, "smoke", reading="centred")])
    assert cap.startswith("SAE readings: literal, centred. ") and "seeds 42, 43 (n=2)" in cap
    assert "fedcba9" in cap and "fedcba9" not in st.side_by_side_caption([lit])


def test_captions_name_the_commits_torch_and_devices_that_made_the_records(tmp_path):
    from vaesae import artifacts
    from vaesae.analysis import figures

    assert artifacts.made_with([{"git_commit": "c28700d675d4", "environment": {"torch": "2.11.0", "device": "NVIDIA H200"}},
                                {"git_commit": "5ef8c1a00000", "environment": {"torch": "2.11.0", "device": "cpu"}}, {}]) \
        == "commits 5ef8c1a, c28700d; torch 2.11.0; NVIDIA H200, cpu"
    assert artifacts.made_with([{}]) == "commit unknown; torch unknown; unknown"
    make_fake_study(tmp_path)
    run = tmp_path / "smoke" / "shapes3d" / "seed42" / "extended" / "run.json"
    meta = json.loads(run.read_text())
    run.write_text(json.dumps({**meta, "git_commit": "abcdef0123", "environment": {"device": "NVIDIA H200", "torch": "2.11.0"}}))
    s = st.load_study(tmp_path, "smoke")
    cap = figures.figure_caption(s, "x.", "shapes3d", "extended")
    assert cap.endswith("Made by commit abcdef0; torch 2.11.0; NVIDIA H200, cpu.")
    assert "abcdef0" not in figures.figure_caption(s, "x.", "dsprites", "extended")   # only the records drawn


def test_the_extended_figures_draw_each_seed_paired_with_the_stage_3_it_continued(tmp_path):
    """Figures 8-9: one line per seed whose extended run continued a recorded stage 3 (the paper draws seed 42 alone);
    a seed whose starting state was not kept is left out of the figure and its caption; ``seed`` draws one."""
    import matplotlib.pyplot as plt

    from vaesae.analysis import figures

    make_fake_study(tmp_path)
    seed43 = tmp_path / "smoke" / "shapes3d" / "seed43"
    for run, meta in (("topk", {"checkpoint_sha256": "c"}), ("extended", {"input_sha256": "C"})):   # C: not kept
        f = seed43 / run / "run.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), **meta}))
    s = st.load_study(tmp_path, "smoke")
    cap = figures.figure_caption(s, "x.", "shapes3d", "extended")
    assert "seeds 42, 44 (n=2)" in cap and "43" not in cap
    fig = figures.fig_extended(s, "shapes3d")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(legend) == ["end of stage 3", "paper, Table 3", "seed 42", "seed 44"]
    assert "seeds 42, 44 (n = 2)" in fig._suptitle.get_text()
    dead = fig.axes[2]
    ext = [ln for ln in dead.get_lines() if ln.get_label() == "seed 44"][0]
    want = s.rows("shapes3d", "extended", 44)
    assert list(ext.get_xdata()) == list(want.epoch + 10)   # after stage 3's 10 epochs
    assert list(ext.get_ydata()) == list(want["dead_pct@0.001"])
    plt.close(fig)
    fig = figures.fig_extended(s, "shapes3d", seed=44)
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == ["end of stage 3", "paper, Table 3", "seed 44"]
    plt.close(fig)
    assert figures.fig_extended(s, "dsprites", seed=43) is not None   # dSprites' seed 43 is paired


def test_the_topk_vs_l1_and_threshold_figures_are_the_mean_over_seeds(tmp_path):
    """Figures 6-7 and 10-11: the mean over every seed recorded (the paper draws seed 42 alone) with a ± std band;
    ``seed`` draws that seed's own values."""
    import matplotlib.pyplot as plt

    from vaesae.analysis import figures

    make_fake_study(tmp_path)
    s = st.load_study(tmp_path, "smoke")
    dead = "dead_pct@0.001"
    topk = s.rows("dsprites", "topk")
    fig = figures.fig_topk_vs_l1(s, "dsprites")
    assert "mean ± std over 3 seeds: 42, 43, 44" in fig._suptitle.get_text()
    line = [ln for ln in fig.axes[2].get_lines() if ln.get_label() == "Top-k"][0]
    assert np.allclose(line.get_ydata(), topk.groupby("epoch")[dead].mean())
    alive = [b.get_height() for b in fig.axes[3].containers[0]]   # Top-k's bars: specialised, alive
    assert np.isclose(alive[1], (100 - s.final("dsprites", "topk")[dead]).mean())
    plt.close(fig)
    fig = figures.fig_topk_vs_l1(s, "dsprites", seed=43)
    line = [ln for ln in fig.axes[2].get_lines() if ln.get_label() == "Top-k"][0]
    assert np.allclose(line.get_ydata(), topk[topk.seed == 43][dead]) and "seed 43 (n = 1)" in fig._suptitle.get_text()
    plt.close(fig)
    final = s.final("shapes3d", "topk")
    fig = figures.fig_thresholds(s, "shapes3d")
    line = [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "ours"][0]
    assert list(line.get_xdata()) == list(DEAD_T)
    assert np.allclose(line.get_ydata(), [final[f"dead_pct@{t:g}"].mean() for t in DEAD_T])
    plt.close(fig)
    fig = figures.fig_thresholds(s, "shapes3d", seed=44)
    line = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "ours, seed 44"][0]
    assert np.allclose(line.get_ydata(), [final[final.seed == 44][f"spec@{t:g}"].iloc[0] for t in SPEC_T])
    plt.close(fig)


def _paper_marks(ax) -> dict[str, list[tuple[float, float]]]:
    """{label: [(x, y), ...]} of the paper's numbers drawn on ``ax`` (error-bar diamonds and dashed lines)."""
    from matplotlib.container import ErrorbarContainer

    out: dict[str, list[tuple[float, float]]] = {}
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer) and c.get_label().startswith("paper"):
            line = c.lines[0]
            out.setdefault(c.get_label(), []).extend(zip(line.get_xdata(), line.get_ydata()))
    for line in ax.get_lines():
        if line.get_label().startswith("paper"):
            out.setdefault(line.get_label(), []).extend(zip(line.get_xdata(), line.get_ydata()))
    return out


def test_the_paper_figures_show_the_papers_numbers_beside_ours(tmp_path):
    """Figures 1-11 put the paper's printed numbers (Tables 1-5, vaesae.analysis.paper) where ours are: the end of
    stage 3 (k = 50), its start (Table 2, k = 500), each threshold, before and after extended training."""
    import matplotlib.pyplot as plt

    from vaesae.analysis import figures
    from vaesae.config import PAPER_NEURONS

    make_fake_study(tmp_path, dsprites_dead=70.0, shapes_dead=90.0)
    s = st.load_study(tmp_path, "smoke")
    fig = figures.fig_aggregate(s, "shapes3d")   # stage 3: epochs 0-9
    assert _paper_marks(fig.axes[0]) == {"paper, Table 1 (k = 50)": [(9, 62.7)], "paper, Table 2 (k = 500)": [(0, 4.8)]}
    assert _paper_marks(fig.axes[1]) == {"paper, Table 1 (k = 50)": [(9, 0.183)]}
    plt.close(fig)
    fig = figures.fig_cross_dataset(s)
    assert _paper_marks(fig.axes[0])["paper, dSprites (Tables 1-2)"] == [(50, 34.4), (500, 1.2)]
    plt.close(fig)
    for rows in (tmp_path / "smoke" / "dsprites").glob("seed*/topk/epochs.csv"):   # a profile of m = 512: k 31 -> 3
        df = pd.read_csv(rows)
        df.assign(k=(df.k * 512 / PAPER_NEURONS).round().astype(int)).to_csv(rows, index=False)
    fig = figures.fig_cross_dataset(st.load_study(tmp_path, "smoke"))
    assert [x for x, _ in _paper_marks(fig.axes[0])["paper, dSprites (Tables 1-2)"]] == [3, 31]
    plt.close(fig)
    fig = figures.fig_topk_vs_l1(s, "dsprites")
    assert _paper_marks(fig.axes[2]) == {"paper, Top-k (Table 1)": [(9, 34.4)], "paper, L1 (Table 1)": [(9, 41.7)]}
    bars = sorted(y for _, y in _paper_marks(fig.axes[3])["paper (Table 1)"])
    m = PAPER_NEURONS   # the paper's share of its own dictionary, whatever ours is
    assert np.allclose(bars, sorted([100 * 1188 / m, 100 * 479 / m, 100 - 34.4, 100 - 41.7]))
    plt.close(fig)
    fig = figures.fig_extended(s, "dsprites")   # stage 3 ends at epoch 9, extended runs 20 epochs after it
    assert _paper_marks(fig.axes[2]) == {"paper, Table 3": [(9, 34.4), (29, 34.7)]}
    plt.close(fig)
    fig = figures.fig_thresholds(s, "shapes3d")
    assert _paper_marks(fig.axes[0]) == {"paper, Table 4": sorted(paper.TABLE4["shapes3d"].items())}
    assert _paper_marks(fig.axes[1]) == {"paper, Table 5": sorted(paper.TABLE5["shapes3d"].items())}
    plt.close(fig)
