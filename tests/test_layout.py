"""The tracked tree's budget: the GPU machine copies the working tree and refuses one over 64 MiB,
so the whole tracked tree (the paper study's records included) must stay under 40 MiB."""

import re
import zipfile

import pytest

from vaesae.errors import VaesaeError
from vaesae.io import REPO_ROOT
from vaesae.report.treesize import BUDGET_MIB, tracked_sizes


def _sizes() -> dict[str, int]:
    try:
        return tracked_sizes(REPO_ROOT)
    except VaesaeError:
        pytest.skip("not a git checkout (a copy of the tree): nothing tracked to measure")


def _tracked() -> list[str]:
    return list(_sizes())


def test_the_tracked_tree_stays_under_its_budget():
    sizes = _sizes()
    total = sum(sizes.values())
    biggest = ", ".join(f"{p} {s / 2**20:.1f} MiB" for p, s in sorted(sizes.items(), key=lambda kv: -kv[1])[:8])
    assert total <= BUDGET_MIB * 2**20, (
        f"the tracked tree is {total / 2**20:.1f} MiB, over its budget of {BUDGET_MIB} MiB (README, Reproducibility); "
        f"largest: {biggest}")


def test_committed_neuron_records_are_compact():
    """Every tracked neuron record is in the compact layout of vaesae.metrics.records: compressed, no ``mi``
    (derived on reading), and stage 2's k = 500 record is not stored a second time."""
    records = [p for p in _tracked() if p.endswith(".npz") and "/neurons_" in p]
    assert not [p for p in records if p.endswith("neurons_k500.npz")]
    for p in records:
        with zipfile.ZipFile(REPO_ROOT / p) as z:
            names = {i.filename for i in z.infolist()}
            assert "mi.npy" not in names and "latent_mi.npy" not in names, p
            assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist()), p


def test_no_committed_page_stores_a_figure_a_second_time():
    """Every tracked page under results/ links, not embeds, each image that is a tracked PNG under figures/
    (nbhtml.link_figures; ``python -m vaesae.report.nbhtml link-figures`` fixes one that does not), and every image
    it links exists."""
    from urllib.parse import unquote

    from vaesae.report.nbhtml import figure_index, link_figures

    tracked = _tracked()
    index = {h: f for h, f in figure_index(REPO_ROOT / "figures").items()
             if f.relative_to(REPO_ROOT).as_posix() in set(tracked)}
    pages = [REPO_ROOT / p for p in tracked if p.startswith("results/") and p.endswith(".html")]
    assert index and pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert link_figures(text, page.parent, index)[1] == 0, f"{page.relative_to(REPO_ROOT)} embeds a figure file"
        for src in re.findall(r'<img [^>]*src="(?!data:)([^"]+)"', text):
            assert (page.parent / unquote(src)).exists(), f"{page.relative_to(REPO_ROOT)}: {src} is missing"


def test_every_committed_manifest_matches_the_files_it_records():
    """Each tracked ``results/<profile>/_manifest/*.json`` names files that are tracked, with their current SHA-256:
    a page or notebook rewritten without its manifest (by hand, or a tool other than the runner and
    scripts/compact_records.py) would make ``--reuse`` run that job again, and every job after it."""
    import json

    from vaesae.io import sha256_file

    tracked = set(_tracked())
    manifests = [p for p in tracked if p.startswith("results/") and "/_manifest/" in p and p.endswith(".json")]
    assert manifests
    for m in manifests:
        for rel, digest in json.loads((REPO_ROOT / m).read_text()).get("outputs", {}).items():
            assert rel in tracked, f"{m}: {rel} is not tracked"
            assert sha256_file(REPO_ROOT / rel) == digest, f"{m}: {rel} changed since its job wrote it"


def test_a_notebook_page_is_self_contained_and_small(tmp_path):
    """The executed notebook's HTML keeps its outputs and embedded images, links nothing, and carries
    no 265 KB stylesheet (vaesae.report.nbhtml)."""
    import base64

    import nbformat

    from vaesae.report.nbhtml import render_file

    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Stage one"),
        nbformat.v4.new_code_cell("print('dead % 80.3')", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="dead % 80.3\n"),
            nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})]),
    ])
    nbformat.write(nb, str(tmp_path / "01_stage1_vae.ipynb"))
    page = render_file(tmp_path / "01_stage1_vae.ipynb").read_text()
    assert "Stage one" in page and "dead % 80.3" in page and f"data:image/png;base64,{png}" in page
    assert "<link" not in page and "<script src=" not in page and len(page.encode()) < 30_000


def test_a_notebooks_large_images_live_in_its_page_only(tmp_path):
    """nbhtml.strip_images: after the page is written the notebook keeps a pointer instead of each large image (small
    ones stay), stays a valid notebook, and its page is never rendered again from it (the images would be lost)."""
    import base64

    import nbformat

    from vaesae.report.nbhtml import IMAGE_MIN_BYTES, render_file, strip_images

    big = base64.b64encode(bytes(range(256)) * (IMAGE_MIN_BYTES // 128)).decode()
    small = base64.b64encode(b"\x89PNG" + b"\0" * 16).decode()
    path = tmp_path / "07_figures.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig()", outputs=[
        nbformat.v4.new_output("display_data", data={"image/png": big, "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"image/png": small, "text/plain": "<Icon>"})])]), str(path))
    page = render_file(path)
    assert strip_images(path) == 1 and strip_images(path) == 0   # a second pass finds nothing
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    outs = nb.cells[0].outputs
    assert "image/png" not in outs[0].data and "07_figures.html" in outs[0].data["text/plain"]
    assert outs[1].data["image/png"] == small and nb.metadata["vaesae"]["images_in"] == "07_figures.html"
    before = page.read_bytes()
    assert f"data:image/png;base64,{big}" in before.decode()
    render_file(path)
    assert page.read_bytes() == before   # not overwritten from the stripped notebook


def test_a_page_links_the_figures_it_shows_instead_of_embedding_them(tmp_path):
    """nbhtml.link_figures: an embedded PNG whose bytes are a file under figures/ becomes a relative link to it (the
    page then stores no copy of it); any other image stays embedded. (Pages written before: test_records'
    compact_records test.)"""
    import base64

    import nbformat

    from vaesae.report.nbhtml import render_file

    saved, other = b"\x89PNG\r\n\x1a\n" + bytes(range(200)) * 60, b"\x89PNG\r\n\x1a\n" + b"\1" * 12_000
    (tmp_path / "figures" / "paper").mkdir(parents=True)
    (tmp_path / "figures" / "paper" / "fig1 a.png").write_bytes(saved)
    nb_dir = tmp_path / "results" / "paper"
    nb_dir.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("show()", outputs=[
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(b).decode(), "text/plain": "x"})
        for b in (saved, other)])])
    nbformat.write(nb, str(nb_dir / "07_figures.ipynb"))
    page = render_file(nb_dir / "07_figures.ipynb", figures_dir=tmp_path / "figures").read_text()
    assert 'src="../../figures/paper/fig1%20a.png"' in page
    assert base64.b64encode(saved).decode() not in page and base64.b64encode(other).decode() in page
    embedded = render_file(nb_dir / "07_figures.ipynb", nb_dir / "old.html").read_text()   # no figures_dir: as before
    assert embedded.count("data:image/png;base64,") == 2


def test_the_projection_counts_every_missing_run_and_page_at_its_committed_mean(tmp_path):
    """vaesae.report.treesize: on a small checkout with two topk folders (sizes 100 and 300 bytes) and one page, every expected
    folder and page not tracked is added at the mean of its own run (topk: 200) or, failing that, its kind or the
    largest run's mean, and the sums are today's bytes plus those."""
    import json
    import subprocess

    from vaesae.analysis import coverage
    from vaesae.report import treesize as T

    base = tmp_path / "results/paper"
    (base / "dsprites/seed42/topk").mkdir(parents=True)
    (base / "dsprites/seed43/topk").mkdir(parents=True)
    (base / "dsprites/seed42/topk/run.json").write_bytes(b"x" * 100)
    (base / "dsprites/seed43/topk/run.json").write_bytes(b"x" * 300)
    (base / "dsprites/seed42/03_stage3_topk.ipynb").write_bytes(b"x" * 50)
    (base / "readings_choice.json").write_text(json.dumps({"chosen": "centred"}))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    m = T.measure(tmp_path, "paper")
    want = coverage.expected("centred")
    assert m["chosen_reading"] == "centred" and m["runs_committed"] == 2 and m["pages_committed"] == 1
    assert m["runs_expected"] == len(want["runs"]) and "shapes3d/seed44/topk@centred" in want["runs"]
    assert "dsprites/seed42/topk_lr_x10@centred" in want["runs"] and "dsprites/seed43/topk_lr_x10@centred" not in want["runs"]
    assert "dsprites/seed43/stage2@standardised" in want["runs"] and "dsprites/seed43/stage2@centred" in want["runs"]
    today = 100 + 300 + 50 + len((base / "readings_choice.json").read_bytes())
    assert m["tracked_bytes"] == today
    # every missing folder here costs 200 (topk's mean, the only run, kind and largest mean there is); every page 50
    missing = (len(want["runs"]) - 2) * 200 + (len(want["pages"]) - 1) * 50
    assert m["projected_add_bytes"] == missing and m["projected_bytes"] == today + missing


def test_the_lineage_to_come_is_one_chain_per_dataset_seed_and_kind_of_work():
    """Four remedies of one seed share one retrained stage 1 and stage 2; a sweep's Top-k comes with its own stage 2
    (imported together: not kept) and every sweep reading shares stage 1; the chosen chain's extended run keeps its
    stage 1, 2 and 3 apart from the remedies' (another session)."""
    from vaesae.report import treesize as T

    ch = "standardised"
    remedies = [f"dsprites/seed43/{r}@{ch}" for r in ("topk_aux", "topk_init", "batchtopk", "elastic")]
    assert T.lineage_to_come(remedies, ch) == [("dsprites/seed43", "stage1", ("remedy", ch)),
                                              ("dsprites/seed43", f"stage2@{ch}", ("remedy", ch))]
    sweep = [f"shapes3d/seed44/{r}@{rd}" for rd in ("centred", "boost_steps") for r in ("stage2", "topk")]
    assert T.lineage_to_come(sweep, ch) == [("shapes3d/seed44", "stage1", ("sweep",))]
    got = T.lineage_to_come(remedies + [f"dsprites/seed43/extended@{ch}", "dsprites/seed44/extended"], ch)
    assert len(got) == 2 + 3 + 3 and ("dsprites/seed44", "topk", ("study", "literal")) in got
    assert ("dsprites/seed43", f"topk@{ch}", ("study", ch)) in got


def test_the_projection_adds_the_lineage_to_come_at_its_committed_mean(tmp_path):
    """Two kept entries (stage 1: 60 bytes, a stage 2: 40): each entry to come is counted at its own run's mean, and
    the tracked entries are reported apart."""
    import json
    import subprocess

    from vaesae.analysis import coverage
    from vaesae.report import treesize as T

    base = tmp_path / "results/paper"
    for entry, n in (("stage1.aaaaaaaaaaaa", 60), ("stage2@centred.bbbbbbbbbbbb", 40)):
        (base / "dsprites/seed42/lineage" / entry).mkdir(parents=True)
        (base / "dsprites/seed42/lineage" / entry / "run.json").write_bytes(b"x" * n)
    (base / "readings_choice.json").write_text(json.dumps({"chosen": "centred"}))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    m = T.measure(tmp_path, "paper")
    assert m["lineage_entries"] == 2 and m["lineage_bytes"] == 100 and m["runs_committed"] == 0
    to_come = T.lineage_to_come(coverage.expected("centred")["runs"], "centred")
    size = {"stage1": 60, "stage2": 40}   # other predecessors (topk, stage2_init1): their kind's mean, else every entry's (50)
    want = sum(size.get(f.partition("@")[0], 50) for _, f, _ in to_come)
    assert m["projected_lineage_entries"] == len(to_come) > 0 and m["projected_lineage_bytes"] == want


def test_the_projection_outside_a_checkout_is_one_line(tmp_path):
    from vaesae.report import treesize as T
    with pytest.raises(VaesaeError, match="not a git checkout"):
        T.tracked_sizes(tmp_path)


def test_the_readme_maps_every_committed_table_and_figure():
    """README's "Every table and figure" names the file of each table and figure the paper profile committed
    (``<name>@<reading>`` variants under their base name): a reader finds which notebook made it."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Every table and figure of the paper", 1)[1].split("\n## ", 1)[0]
    names = set()
    for path in _tracked():
        folder, _, file = path.rpartition("/")
        if folder in ("results/paper/tables", "figures/paper") and not file.startswith("index."):
            names.add(file.rsplit(".", 1)[0].split("@", 1)[0])
    assert names, "no committed table or figure found"
    missing = sorted(n for n in names if f"{n}." not in section)
    assert not missing, f"README's table and figure map lacks {', '.join(missing)}"
