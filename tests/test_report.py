"""The reviewer report: built from a small fake study, then loaded in a real headless browser."""

import base64
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vaesae.report import page as report_page, browser as report_browser, cli as report_cli  # noqa: E402
from vaesae.artifacts import save_figure, save_table  # noqa: E402
from vaesae.errors import VaesaeError  # noqa: E402
from vaesae.io import atomic_save_json, atomic_write_text  # noqa: E402

PROFILE = "quick"


def _chromium() -> str:
    """The browser, or skip (outside CI only: in CI a missing Chromium fails the test)."""
    found = report_browser.find_chromium()
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("Chromium is not installed but CI is set: .ci/run must install Debian's 'chromium' package")
    pytest.skip("Chromium is not installed (apt-get install chromium); the real-browser check needs it")


def _tiny_figure(title: str):
    fig, ax = plt.subplots(figsize=(2.5, 1.8))
    ax.plot([0, 1, 2], [1, 0, 2])
    ax.set_title(title)
    return fig


def _executed_notebook(path: Path, text: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('hello')", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    nb.cells = [nbformat.v4.new_markdown_cell("# A notebook"), cell]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@pytest.fixture
def study(tmp_path):
    """A fake study: two tables + verdicts, two figures, run records, executed notebooks."""
    results, figures = tmp_path / "results", tmp_path / "figures"
    cap = "Data: procedural stand-in; profile: quick; seed 42 (n=1)."
    save_table(pd.DataFrame({"claim": ["C1 dead % at k=50", "C2 MIG stable", "C3 L1 worse", "C4 recovery", "C5 MSE"],
                             "paper": [38.1, 0.01, None, 0.0, 0.02], "ours": [35.123456789, 0.02, 1.5, None, 0.05],
                             "verdict": ["reproduced", "direction-only", "not reproduced", "not measured",
                                         "inconclusive"]}),
               results, PROFILE, "verdicts", title="Verdicts", caption="Verdict rule: the fake rule. " + cap, order=0)
    save_table(pd.DataFrame({"dataset": ["dsprites"], "dead_pct@0.001": [12.3456789123], "mig": [0.21]}),
               results, PROFILE, "topk_summary", title="Top-k summary", caption="Summary table. " + cap, order=1)
    save_table(pd.DataFrame({"k": [500, 50], "spec@0.5": [3, 1]}),
               results, PROFILE, "spec_counts", title="Specialised counts", caption="Counts. " + cap, order=2)
    for i, name in enumerate(("dead_vs_k", "mig_vs_k")):
        fig = _tiny_figure(name)
        save_figure(fig, figures, PROFILE, name, title=f"Figure {name}", caption=f"Caption of {name}. " + cap, order=i)
        plt.close(fig)
    seed_dir = results / PROFILE / "dsprites" / "seed42"
    for run in ("stage1", "topk"):
        atomic_save_json(seed_dir / run / "run.json", {
            "profile": PROFILE, "dataset": "dsprites", "data_source": "procedural", "seed": 42,
            "git_commit": "abc123def4567890", "params": {"epochs": 2},
            "environment": {"python": "3.11.9", "torch": "2.13.0", "numpy": "2.4.0", "device": "cpu (2 cores)"}})
    # one executed notebook whose HTML the pipeline already wrote, one the report must render
    _executed_notebook(seed_dir / "01_stage1_vae.ipynb", "stage one done\n")
    atomic_write_text(seed_dir / "01_stage1_vae.html", "<html><body><p>stage one (pipeline HTML)</p></body></html>")
    _executed_notebook(seed_dir / "03_stage3_topk.ipynb", "topk done\n")
    _executed_notebook(results / PROFILE / "dsprites" / "00_data.ipynb", "data ok\n")
    _executed_notebook(results / PROFILE / "07_figures.ipynb", "figures ok\n")
    # 07 shows a saved figure (IPython.display.Image(filename=...)): its page must link the file, not embed it
    nb = nbformat.read(str(results / PROFILE / "07_figures.ipynb"), as_version=4)
    png = base64.b64encode((figures / PROFILE / "dead_vs_k.png").read_bytes()).decode()
    nb.cells[1].outputs.append(nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Image>"}))
    nbformat.write(nb, str(results / PROFILE / "07_figures.ipynb"))
    return results, figures


def test_report_contents(study):
    results, figures = study
    path = report_page.build_report(results, figures, PROFILE)
    assert path == results / PROFILE / "report.html"
    page = path.read_text()
    # data source stated prominently, before the verdicts
    assert "procedural stand-ins were used, not the real datasets" in page
    assert page.index('id="data-source"') < page.index('id="verdicts"')
    # verdict table with its caption (the rule) and coloured verdict cells, near the top
    assert "Verdict rule: the fake rule." in page and all(f'class="{c}"' in page for c in ("v-ok", "v-dir", "v-inc", "v-bad", "v-na"))
    assert page.index("Verdict rule: the fake rule.") < page.index('id="tables"')
    # every table and figure, in index order; long floats shortened
    tables = page[page.index('id="tables"'):]
    assert tables.index("Top-k summary") < tables.index("Specialised counts")
    assert "12.346" in page and "12.3456789123" not in page
    assert page.index("Figure dead_vs_k") < page.index("Figure mig_vs_k")
    assert 'src="../../figures/quick/dead_vs_k.png"' in page and 'href="../../figures/quick/mig_vs_k.pdf"' in page
    # notebooks: the missing HTML was rendered with nbconvert, the pipeline's own HTML kept
    seed_dir = results / PROFILE / "dsprites" / "seed42"
    assert "topk done" in (seed_dir / "03_stage3_topk.html").read_text()
    assert "pipeline HTML" in (seed_dir / "01_stage1_vae.html").read_text()
    fig_page = (results / PROFILE / "07_figures.html").read_text()
    assert "figures ok" in fig_page and 'src="../../figures/quick/dead_vs_k.png"' in fig_page and "data:image" not in fig_page
    for href in ("dsprites/seed42/01_stage1_vae.html", "dsprites/seed42/03_stage3_topk.html",
                 "dsprites/00_data.html", "07_figures.html"):
        assert f'href="{href}"' in page
    assert "dsprites, seed 42" in page and "whole profile" in page
    # environment and provenance
    assert "abc123def4567890" in page and "2.13.0" in page
    for pkg in report_page.PACKAGES:
        assert f"<th>{pkg}</th>" in page
    assert "Missing or incomplete" not in page
    # no absolute paths leak into the page
    assert str(results) not in page


def test_report_loads_in_a_real_browser(study):
    chromium = _chromium()
    results, figures = study
    path = report_page.build_report(results, figures, PROFILE)
    check = report_browser.browser_check(path, chromium=chromium)
    assert check.ok, check.summary()
    assert check.images == 2 and check.broken_images == []
    # figures (img + link + pdf), table files, notebooks and run records were all resolved
    assert check.links >= 2 * 3 + 3 * 3 + 4 + 2
    assert check.external == []   # the paper is cited as text: the page links and loads nothing off the machine
    assert report_page.PAPER_URL in path.read_text()
    assert not list(path.parent.glob(".report.check-*")), "the probe copy is cleaned up"


def test_browser_check_detects_broken_image_and_missing_link(study):
    chromium = _chromium()
    results, figures = study
    path = report_page.build_report(results, figures, PROFILE)
    (figures / PROFILE / "mig_vs_k.png").unlink()          # the page still points at it
    (results / PROFILE / "dsprites" / "00_data.html").unlink()
    page = path.read_text().replace("</body>", '<a href="#no-such-anchor">x</a></body>')
    atomic_write_text(path, page)
    check = report_browser.browser_check(path, chromium=chromium)
    assert not check.ok
    assert check.broken_images == ["../../figures/quick/mig_vs_k.png"]
    assert "../../figures/quick/mig_vs_k.png" in check.missing_targets
    assert "dsprites/00_data.html" in check.missing_targets
    assert check.missing_anchors == ["#no-such-anchor"]
    assert "did not load" in check.summary()


def test_missing_pieces_do_not_crash(tmp_path):
    results, figures = tmp_path / "results", tmp_path / "figures"
    path = report_page.build_report(results, figures, "smoke")
    page = path.read_text()
    assert "Missing or incomplete" in page
    for what in ("No verdict table yet", "No tables yet", "No figures yet", "No executed notebooks yet", "Data source: unknown"):
        assert what in page
    # an index that lists files that are gone, a damaged run record, a Markdown-only verdict table
    tables = results / "smoke" / "tables"
    atomic_save_json(tables / "index.json", [{"name": "gone", "title": "Gone table", "caption": "c", "order": 1}])
    atomic_write_text(tables / "verdicts.md", "| claim | verdict |\n|---|---|\n| C1 | reproduced |\n")
    atomic_save_json(figures / "smoke" / "index.json", [{"name": "gone_fig", "title": "Gone figure", "caption": "c", "order": 1}])
    atomic_write_text(results / "smoke" / "dsprites" / "seed1" / "stage1" / "run.json", "{not json")
    page = report_page.build_report(results, figures, "smoke").read_text()
    assert "gone.csv does not exist" in page and "gone_fig.png does not exist" in page
    assert "could not be read" in page
    assert "<td>reproduced</td>" in page  # markdown rendered through nbconvert's mistune filter
    assert 'src="' not in page  # no image tag pointing at a missing file


def test_data_source_banner():
    assert report_page._banner({"dsprites": ["real"], "shapes3d": ["real"]})["level"] == "ok"
    b = report_page._banner({"dsprites": ["real"], "shapes3d": ["procedural"]})
    assert b["level"] == "warn" and "shapes3d" in b["text"] and "dsprites" not in b["text"].split("Per dataset")[0]
    assert report_page._banner({"dsprites": ["synthetic"]})["level"] == "bad"
    assert report_page._banner({})["level"] == "none"


def test_cli(study, capsys):
    results, figures = study
    assert report_cli.main(["--profile", PROFILE, "--results-dir", str(results), "--figures-dir", str(figures)]) == 0
    assert (results / PROFILE / "report.html").exists()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        report_cli.main(["--profile", "nope", "--results-dir", str(results)])
    assert exc.value.code == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    with pytest.raises(VaesaeError):
        report_page.build_report(results, figures, "../escape")


def test_cli_check(study, capsys, monkeypatch):
    monkeypatch.setenv("VAESAE_CHROMIUM", _chromium())
    results, figures = study
    assert report_cli.main(["--profile", PROFILE, "--results-dir", str(results), "--figures-dir", str(figures), "--check"]) == 0
    assert re.search(r"browser check passed: 2 images loaded", capsys.readouterr().out)


def test_table_text_rounds_floats_and_the_csv_keeps_them(tmp_path):
    df = pd.DataFrame({"run": ["a|b", "c"], "dead %": [81.26220703125, 92.3], "MSE": [0.0018984828763358348, float("nan")],
                       "img/s": [113483.0, 999.96], "n": [1, 2]})
    save_table(df, tmp_path, PROFILE, "t", title="T", caption="c")
    md = (tmp_path / PROFILE / "tables" / "t.md").read_text()
    assert "| a\\|b | 81.26 | 0.001898 | 113483 | 1 |" in md
    assert "| c | 92.3 | nan | 1000 | 2 |" in md
    tex = (tmp_path / PROFILE / "tables" / "t.tex").read_text()
    assert "81.26 & 0.001898 & 113483 & 1" in tex
    assert pd.read_csv(tmp_path / PROFILE / "tables" / "t.csv")["dead %"][0] == 81.26220703125


def test_report_and_notebook_pages_make_no_request_off_the_machine(study, tmp_path):
    """Issue 18: offline. Chromium loads the report and an executed notebook's HTML (rendered by the pipeline's
    renderer) with name resolution blocked and a network log; neither asks for anything but file:// URLs.
    A page that loads a script from a CDN is caught (the check can fail)."""
    chromium = _chromium()
    from vaesae.report.nbhtml import render_file

    results, figures = study
    path = report_page.build_report(results, figures, PROFILE)
    assert report_browser.page_requests(path, chromium=chromium) == []
    nb = results / PROFILE / "dsprites" / "seed42" / "03_stage3_topk.ipynb"
    md = nbformat.read(str(nb), as_version=4)
    md.cells.insert(0, nbformat.v4.new_markdown_cell("Maths: $h(p) + p \\ln 19$"))  # the lab template would fetch MathJax
    nbformat.write(md, str(nb))
    html = render_file(nb, tmp_path / "nb.html")
    assert "mathjax" not in html.read_text().lower() and "require.js" not in html.read_text()
    assert report_browser.page_requests(html, chromium=chromium) == []
    bad = tmp_path / "bad.html"
    bad.write_text('<html><head><script src="https://cdn.example.org/x.js"></script></head><body>x</body></html>')
    assert report_browser.page_requests(bad, chromium=chromium) == ["https://cdn.example.org/x.js"]


def test_report_page_structure(study):
    """Issue 18: unique ids, a contents list linking every table, figure and notebook, placeholders for the
    paper's figures not drawn, per-run provenance, the readings section's placeholder, print styles."""
    results, figures = study
    page = report_page.build_report(results, figures, PROFILE).read_text()
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    nav = page[page.index('<nav id="contents">'):page.index("</nav>")]
    for anchor in re.findall(r'<(?:section|figure) id="((?:table|figure)-[^"]+)"', page):
        assert f'href="#{anchor}"' in nav, anchor
    for href in ("dsprites/seed42/01_stage1_vae.html", "07_figures.html"):
        assert f'href="{href}"' in nav
    assert "Figure 8: dSprites extended training" in page and "waits for the extended runs" in page
    assert page.count('class="placeholder"') >= 11 + 1   # Figures 1-11 (none drawn here) and the readings section
    assert "Which reading of the SAE" in page
    runs = page[page.index('id="runs"'):page.index('id="environment"')]
    assert "2.13.0" in runs and "cpu (2 cores)" in runs and "abc123def456" in runs
    assert "@media print" in page and "overflow-x: auto" in page


def test_claim_tests_at_one_seed_is_one_line(study):
    results, figures = study
    df = pd.DataFrame({"comparison": ["k=50 − k=500"], "dataset": ["dSprites"], "metric": ["dead %"], "n_a": [1], "n_b": [1],
                       "mean_a": [80.3], "mean_b": [81.3], "difference": [1.0], "ci95_lo": [float("nan")], "ci95_hi": [float("nan")],
                       "welch_t": [float("nan")], "df": [float("nan")], "p_value": [float("nan")], "claimed": ["+"],
                       "verdict": ["needs ≥ 2 seeds"], "note": ["needs ≥ 2 seeds per group (n_a=1, n_b=1)"]})
    save_table(df, results, PROFILE, "claim_tests", title="Claim tests", caption="c", order=5)
    page = report_page.build_report(results, figures, PROFILE).read_text()
    sec = page[page.index('id="table-claim_tests"'):]
    sec = sec[:sec.index("</section>")]
    assert "Needs ≥ 2 seeds per group" in sec and "<th>p_value</th>" not in sec and "<th>ci95_lo</th>" not in sec
    assert "<th>difference</th>" in sec and ">nan<" not in sec


def test_a_page_and_record_kept_in_lineage_are_named_as_such(study):
    """A seed's lineage/ entry (a predecessor a device session trained again) is listed beside the committed run of
    the same name, and told apart from it: in the notebook list, its table of contents line, and the provenance."""
    results, figures = study
    entry = results / PROFILE / "dsprites" / "seed42" / "lineage" / "stage1.0123456789ab"
    atomic_write_text(entry / "01_stage1_vae.html", "<html><body><p>stage one, again</p></body></html>")
    atomic_save_json(entry / "run.json", {"profile": PROFILE, "dataset": "dsprites", "data_source": "procedural", "seed": 42,
                                          "git_commit": "dev0001", "checkpoint_sha256": "0123456789ab" + "0" * 52})
    page = report_page.build_report(results, figures, PROFILE).read_text()
    note = "lineage stage1.0123456789ab: trained again on the device for a later run, not the committed run"
    assert page.count(note) == 2   # the table of contents and the notebook list
    assert 'href="dsprites/seed42/01_stage1_vae.html">01_stage1_vae</a> (dsprites, seed 42)</li>' in page
    assert "<td>stage1 (lineage 0123456789ab)</td>" in page and "<td>stage1</td>" in page
