"""The tracked tree's budget: the GPU machine copies the working tree and refuses one over 64 MiB,
so the whole tracked tree (the paper study's records included) must stay under 40 MiB."""

import os
import subprocess
import zipfile

import pytest

from vaesae.io import REPO_ROOT

BUDGET_MIB = 40


def _tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True,
                             env=dict(os.environ, GIT_OPTIONAL_LOCKS="0")).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (a copy of the tree): nothing tracked to measure")
    return [p for p in out.decode().split("\0") if p]


def test_the_tracked_tree_stays_under_its_budget():
    sizes = {p: os.path.getsize(REPO_ROOT / p) for p in _tracked() if (REPO_ROOT / p).is_file()}
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
