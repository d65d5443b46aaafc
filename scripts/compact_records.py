"""Rewrite committed records in the compact layout (neuron records, notebook pages), and their manifests.

    PYTHONPATH=lib python scripts/compact_records.py [RESULTS_DIR ...]     # default: results

For every ``neurons_*.npz`` under each results directory:

* ``neurons_final.npz`` in the old layout (uncompressed, ``mi`` stored) is rewritten compact;
  the rewrite is read back and checked against the original (every array equal, ``mi`` bit for
  bit; ``top_values`` equal in sign and within float16 rounding);
* a compact ``neurons_final.npz`` that still keeps the top images of every neuron is rewritten with
  them for ``vaesae.metrics.records.top_rows`` only (checked: those rows equal, every other array unchanged);
* a record whose ``mi_nats`` / ``neuron_entropy`` are float64 and can be float32 (``vaesae.metrics.records.narrowing_keeps``:
  every thresholded count and the top rows unchanged) is rewritten with them float32 (checked: read back, they
  are exactly the float64 values rounded to float32, the values ``narrowing_keeps`` counted with);
* the stage-2 neuron records of notebook 10's readings other than literal and the chosen one are deleted
  (``vaesae.analysis.readings.prune_sweep_records``; nothing reads them);
* ``neurons_k500.npz`` is deleted when it holds exactly its sibling ``neurons_final.npz`` (stage 2
  wrote the same record twice); otherwise the script stops.

Every executed notebook with a page loses its large images to the page (``vaesae.report.nbhtml.strip_images``).

Every executed notebook's page (``NN_*.html`` beside its ``.ipynb``) is rendered again from the
notebook by :mod:`vaesae.report.nbhtml` (the same cells, outputs and embedded images, without nbconvert's
265 KB JupyterLab stylesheet).

Every page then links, not embeds, each image that is a PNG under the ``figures/`` folder beside the results
directory (``vaesae.report.nbhtml.link_figures``, as the runner renders pages now).

The predecessors kept inside a run folder (``<run>/lineage/<predecessor folder>/`` and their pages, the layout
before the seeds' pools) move to the seed's pool, ``<seed dir>/lineage/<predecessor folder>.<SHA-256 start>/``
(:func:`vaesae.analysis.study.lineage_entry`), each record once: a record two runs kept is checked to be the same
bytes and kept once (no manifest lists lineage files).

Then every ``<results>/<profile>/_manifest/*.json`` is updated: an output whose recorded SHA-256
was the old file's gets the new file's; a deleted file's entry is removed. Any other entry (a file
that did not verify before) is left as it was, so a job that did not verify still does not.
Records already compact are left untouched, so a second run changes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from vaesae.io import REPO_ROOT, atomic_save_json, load_npz, sha256_file
from vaesae.metrics.records import FINAL, LEGACY_K500, NARROWED, expand, load_neurons, narrowing_keeps, save_neurons, top_rows
from vaesae.report.nbhtml import render_file


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _check(before: dict, after: dict, path: Path) -> None:
    if before.keys() != after.keys():
        raise SystemExit(f"{path}: keys changed: {sorted(set(before) ^ set(after))}")
    for k, v in before.items():
        w = after[k]
        if k.endswith("top_values"):
            ok = w.dtype == v.dtype and np.array_equal(np.sign(v), np.sign(w)) and np.allclose(w, v, rtol=1e-3, atol=0)
        elif k.endswith(NARROWED) or k in ("mi", "latent_mi"):   # float32-rounded (mi follows from mi_nats)
            ok = w.dtype == v.dtype and np.allclose(w, v, rtol=1e-6, atol=0) and (
                not k.endswith(NARROWED) or np.array_equal(w, v.astype(np.float32).astype(np.float64)))
        else:
            ok = w.dtype == v.dtype and np.array_equal(v, w)
        if not ok:
            raise SystemExit(f"{path}: array {k} differs after the rewrite")


def convert(results_dir: Path, changed: dict[Path, tuple[str, str | None]] | None = None) -> dict[Path, tuple[str, str | None]]:
    """{path: (old sha256, new sha256 or None when deleted)} for every file changed, added to ``changed``
    file by file (so that a check that stops the script leaves it complete up to that file)."""
    changed = {} if changed is None else changed
    # the duplicates first, while both copies are still in the layout they were written in
    for path in sorted(results_dir.rglob("neurons_*.npz"), key=lambda p: (p.name != LEGACY_K500, p)):
        old = sha256_file(path)
        if path.name == LEGACY_K500:
            final = path.with_name(FINAL)
            if not final.is_file() or not _same(load_neurons(path), load_neurons(final)):
                raise SystemExit(f"{path} differs from {final}; not deleted (look at it first)")
            path.unlink()
            changed[path] = (old, None)
            continue
        stored = load_npz(path)
        before = expand(stored)
        prune = "top_rows" not in stored and "top_indices" in stored and \
            len(top_rows(before)) < len(np.asarray(stored["top_indices"]))
        narrow = any(p + "mi_nats" in stored and stored[p + "mi_nats"].dtype == np.float64 and narrowing_keeps(before, p)
                     for p in ("", "latent_"))
        if "mi" not in stored and "latent_mi" not in stored and not prune and not narrow:
            continue  # already compact
        save_neurons(path, before)
        changed[path] = (old, sha256_file(path))
        after = load_neurons(path)
        if "top_rows" in after:   # only the kept rows' top images remain; the others read as -1 / 0
            rows = after.pop("top_rows")
            if "top_rows" in before and not np.array_equal(before.pop("top_rows"), rows):
                raise SystemExit(f"{path}: top_rows changed after the rewrite")
            others = np.setdiff1d(np.arange(len(after["top_indices"])), rows)
            if not ((after["top_indices"][others] == -1).all() and (after["top_values"][others] == 0).all()):
                raise SystemExit(f"{path}: rows outside top_rows do not read as empty")
            for k in ("top_indices", "top_values"):
                after[k][others] = before[k][others]
        _check(before, after, path)
    return changed


def rerender_html(results_dir: Path) -> dict[Path, tuple[str, str | None]]:
    """Every executed notebook's HTML (``NN_*.html`` beside its ``.ipynb``) rendered again by
    :func:`vaesae.report.nbhtml.render_file` (the compact page); pages already compact are left alone."""
    changed: dict[Path, tuple[str, str | None]] = {}
    for page in sorted(results_dir.rglob("[0-9][0-9]_*.html")):
        nb = page.with_suffix(".ipynb")
        if not nb.is_file() or page.name.endswith(".FAILED.html"):
            continue
        old = sha256_file(page)
        render_file(nb, page)   # its figures are linked by link_pages, with one index for every page
        new = sha256_file(page)
        if new != old:
            changed[page] = (old, new)
    return changed


def _figures_dir(results_dir: Path) -> Path:
    """The figures folder beside a results directory (``results/`` and ``figures/`` of one checkout)."""
    return results_dir.resolve().parent / "figures"


def link_pages(results_dir: Path) -> dict[Path, tuple[str, str | None]]:
    """Every page (``NN_*.html``) with each embedded image that is a PNG under :func:`_figures_dir` replaced by a
    relative link to it (:func:`vaesae.report.nbhtml.link_figures_file`); pages that embed none are left alone."""
    from vaesae.report.nbhtml import figure_index, link_figures_file

    index = figure_index(_figures_dir(results_dir))
    changed: dict[Path, tuple[str, str | None]] = {}
    for page in sorted(results_dir.rglob("[0-9][0-9]_*.html")):
        old = sha256_file(page)
        if link_figures_file(page, index):
            changed[page] = (old, sha256_file(page))
    return changed


def prune_sweeps(results_dir: Path) -> dict[Path, tuple[str, str | None]]:
    """Notebook 10's stage-2 neuron records of readings other than literal and the chosen one, deleted
    (:func:`vaesae.analysis.readings.prune_sweep_records`) in every profile that has recorded a choice."""
    from vaesae.analysis.readings import CHOICE_FILE, chosen_reading, prune_sweep_records

    changed: dict[Path, tuple[str, str | None]] = {}
    for choice in sorted(results_dir.glob(f"*/{CHOICE_FILE}")):
        profile = choice.parent.name
        digests = {p.resolve(): sha256_file(p) for p in (results_dir / profile).glob("*/seed*/*@*/" + FINAL)}
        for path in prune_sweep_records(results_dir, profile, chosen_reading(results_dir, profile)):
            changed[path] = (digests[path.resolve()], None)
    return changed


def strip_notebooks(results_dir: Path) -> dict[Path, tuple[str, str | None]]:
    """Every executed notebook whose page exists loses its large images to the page
    (:func:`vaesae.report.nbhtml.strip_images`); notebooks already stripped are left alone."""
    from vaesae.report.nbhtml import strip_images

    changed: dict[Path, tuple[str, str | None]] = {}
    for nb in sorted(results_dir.rglob("[0-9][0-9]_*.ipynb")):
        if nb.name.endswith(".FAILED.ipynb") or not nb.with_suffix(".html").is_file():
            continue
        old = sha256_file(nb)
        if strip_images(nb):
            changed[nb] = (old, sha256_file(nb))
    return changed


def pool_lineage(results_dir: Path) -> list[Path]:
    """Move every run folder's ``lineage/`` into its seed's pool (module docstring); returns the entries made. Stops
    with nothing of that run folder moved when a file would be left behind or differs from the pool's copy."""
    import filecmp
    import shutil

    from vaesae.analysis.readings import chosen_reading
    from vaesae.analysis.study import LINEAGE, lineage_entry
    from vaesae.config import split_run_folder
    from vaesae.errors import VaesaeError
    from vaesae.workflow.imports import _is_job_of

    made = []
    for old in sorted(results_dir.glob(f"*/*/seed*/*/{LINEAGE}")):
        run_dir, seed_dir = old.parent, old.parent.parent
        if run_dir.name == LINEAGE:
            continue   # the pool itself
        try:
            chosen = chosen_reading(results_dir, seed_dir.parent.parent.name)
        except VaesaeError:
            chosen = None
        moves: list[tuple[Path, Path]] = []
        pages = sorted(old.glob("*.html"))
        for sub in sorted(p for p in old.iterdir() if p.is_dir()):
            sha = json.loads((sub / "run.json").read_text())["checkpoint_sha256"]
            entry = seed_dir / LINEAGE / lineage_entry(sub.name, sha)
            run, reading = split_run_folder(sub.name)
            mine = [p for p in sub.iterdir()] + [p for p in pages if _is_job_of(p.stem, run, reading, chosen)]
            moves += [(p, entry / p.name) for p in mine]
        left = {p for p in old.rglob("*") if p.is_file()} - {a for a, _ in moves}
        if left:
            raise SystemExit(f"{old}: {', '.join(sorted(p.name for p in left))} belong to no kept predecessor; nothing moved")
        for a, b in moves:
            if b.exists() and not filecmp.cmp(a, b, shallow=False):
                raise SystemExit(f"{a} differs from {b}, the pool's copy of the same checkpoint's record; nothing moved")
        for a, b in moves:
            if not b.exists():
                b.parent.mkdir(parents=True, exist_ok=True)
                made += [b.parent] if b.parent not in made else []
                shutil.copyfile(a, b)
        shutil.rmtree(old)
    return made


def update_manifests(results_dir: Path, changed: dict[Path, tuple[str, str | None]]) -> list[Path]:
    by_path = {p.resolve(): v for p, v in changed.items()}
    touched = []
    for man in sorted(results_dir.glob("*/_manifest/*.json")):
        data = json.loads(man.read_text())
        outputs = data.get("outputs") or {}
        new_outputs, dirty = {}, False
        for rel, digest in outputs.items():
            p = Path(rel)
            p = (p if p.is_absolute() else results_dir.parent / p).resolve()
            if p in by_path and by_path[p][0] == digest:
                dirty = True
                if by_path[p][1] is not None:
                    new_outputs[rel] = by_path[p][1]
                continue
            new_outputs[rel] = digest
        if dirty:
            data["outputs"] = new_outputs
            atomic_save_json(man, data)
            touched.append(man)
    return touched


def main(argv: list[str]) -> int:
    dirs = [Path(a) for a in argv] or [REPO_ROOT / "results"]
    for d in dirs:
        # every step adds what it changed as it goes, and the manifests follow even when a later step stops
        # the script: a rerun finds those files already compact and would not know their old digests
        changed: dict[Path, tuple[str, str | None]] = {}
        try:
            convert(d, changed)
            changed.update(prune_sweeps(d))
            pages = rerender_html(d)
            changed.update(pages)
            stripped = strip_notebooks(d)
            changed.update(stripped)
            linked = link_pages(d)
            # a page rendered again above and then linked: its manifest holds the digest from before both
            changed.update({p: (changed.get(p, v)[0], v[1]) for p, v in linked.items()})
            pooled = pool_lineage(d)
        finally:
            touched = update_manifests(d, changed)
        n_del = sum(1 for v in changed.values() if v[1] is None)
        print(f"{d}: {len(changed) - n_del - len(set(pages) | set(stripped) | set(linked))} records rewritten, {n_del} records deleted (duplicate k500 records, unpublished readings' stage 2), "
              f"{len(pages)} notebook pages rendered compact, {len(stripped)} notebooks' images left to their pages, "
              f"{len(linked)} pages linking their figures, {len(pooled)} lineage entries pooled, "
              f"{len(touched)} manifests updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
