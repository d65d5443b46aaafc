"""The HTML rendering of an executed notebook: one self-contained page, small.

nbconvert's default (``lab``) template embeds JupyterLab's whole stylesheet (about 265 KB) in
every page, ten times the size of a per-seed notebook's own content. This renders the notebook's
cells and outputs with nbconvert's ``basic`` template (images stay embedded as data: URIs, so the
page opens offline on its own) and adds a short stylesheet of our own plus the syntax colours.

:func:`strip_images` then takes the large images out of the executed ``.ipynb`` (the page keeps them, and the
figures are also saved as files under ``figures/``): each becomes a one-line pointer to the page, and the notebook's
metadata ``vaesae.images_in`` names the page, which :func:`render_file` then never overwrites (issue 17's size
budget: 06-08's notebooks stored every figure three times).

:func:`link_figures` then keeps each figure once in the tree: an embedded image whose bytes are those of a PNG under
``figures/`` (notebooks 00, 06-10 show their saved figures with ``IPython.display.Image(filename=...)``) becomes a
relative link to that file, as the report page links them, so the page opens offline wherever ``results/`` and
``figures/`` lie side by side. ``scripts/compact_records.py`` does it, with the manifests, for pages rendered before
(07's page was 4.7 MB, nearly all of it the figures of ``figures/paper`` once more).
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
from pathlib import Path
from urllib.parse import quote

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 1.5em auto;
       padding: 0 1em; line-height: 1.45; color: #222; }
.cell { margin: 0.7em 0; }
.input, .output_area { display: flex; }
.prompt { flex: 0 0 6em; color: #888; font: 12px monospace; padding: 0.5em 0.6em 0 0; text-align: right; }
.text_cell .prompt { display: none; }
.inner_cell, .output_subarea { flex: 1 1 auto; min-width: 0; }
.input_area { background: #f7f7f7; border: 1px solid #e0e0e0; border-radius: 3px; }
pre { margin: 0; padding: 0.45em 0.6em; overflow-x: auto; font-size: 12.5px; line-height: 1.35; }
.output_stderr { background: #fff4f4; }
.output_error pre, .output_stderr pre { white-space: pre-wrap; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 12.5px; margin: 0.4em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
thead th { background: #f0f0f0; }
code { font-size: 90%; }
.anchor-link { display: none; }
"""


def notebook_html(nb, title: str = "Notebook") -> str:
    """The page for notebook node ``nb`` (nbformat v4)."""
    from nbconvert import HTMLExporter
    from pygments.formatters import HtmlFormatter

    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
    css = _CSS + HtmlFormatter(style="default").get_style_defs(".highlight")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"/>\n"
            "<meta content=\"width=device-width, initial-scale=1.0\" name=\"viewport\"/>\n"
            f"<title>{html.escape(title)}</title>\n<style type=\"text/css\">{css}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


_DATA_PNG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"')


def relative_url(target: str | Path, base_dir: str | Path) -> str:
    """A relative URL from ``base_dir`` to ``target`` (the report page's links too)."""
    return quote(Path(os.path.relpath(target, base_dir)).as_posix())


def figure_index(figures_dir: str | Path) -> dict[str, Path]:
    """SHA-256 of each PNG under ``figures_dir`` (recursively) -> its path; empty when the folder does not exist."""
    root = Path(figures_dir)
    files = sorted(root.rglob("*.png")) if root.is_dir() else []
    return {hashlib.sha256(f.read_bytes()).hexdigest(): f for f in files}


def link_figures(page: str, page_dir: str | Path, index: dict[str, Path]) -> tuple[str, int]:
    """``page`` (HTML text) with every embedded PNG whose bytes are those of a file in ``index`` (:func:`figure_index`)
    replaced by a relative link to that file from ``page_dir`` (where the page lies); returns it and how many images
    were linked. Other images stay embedded."""
    n = 0

    def _sub(m: re.Match) -> str:
        nonlocal n
        target = index.get(hashlib.sha256(base64.b64decode(m.group(1))).hexdigest())
        if target is None:
            return m.group(0)
        n += 1
        return f'src="{relative_url(target, page_dir)}"'

    return _DATA_PNG.sub(_sub, page), n


def link_figures_file(page: str | Path, index: dict[str, Path]) -> int:
    """:func:`link_figures` on the page file ``page``, rewritten atomically when anything changed; returns the count."""
    from ..io import atomic_write_text

    page = Path(page)
    text, n = link_figures(page.read_text(encoding="utf-8"), page.parent.resolve(), index)
    if n:
        atomic_write_text(page, text)
    return n


def render_file(executed: str | Path, out: str | Path | None = None, figures_dir: str | Path | None = None) -> Path:
    """Write ``executed`` (an ``.ipynb``) as HTML beside it (or to ``out``), atomically; with ``figures_dir``, each
    image that is a PNG file there is linked, not embedded (:func:`link_figures`)."""
    import nbformat

    from ..io import atomic_write_text

    executed = Path(executed)
    out = Path(out) if out is not None else executed.with_suffix(".html")
    nb = nbformat.read(str(executed), as_version=4)
    if nb.metadata.get("vaesae", {}).get("images_in") and out.exists():
        return out   # the page holds the images the notebook no longer does: keep it
    page = notebook_html(nb, title=executed.stem)
    if figures_dir is not None and "data:image/png" in page:   # the index hashes every figure: only when needed
        page, _ = link_figures(page, out.parent.resolve(), figure_index(Path(figures_dir).resolve()))
    atomic_write_text(out, page)
    return out


IMAGE_MIN_BYTES = 8_000   # smaller images (icons, tiny plots) stay in the notebook


def strip_images(executed: str | Path, min_bytes: int = IMAGE_MIN_BYTES) -> int:
    """Replace every image output of ``executed`` (an ``.ipynb`` whose page :func:`render_file` wrote) of at least
    ``min_bytes`` (base64) with a pointer to the page, atomically; returns how many outputs changed (0: untouched)."""
    import nbformat

    from ..io import atomic_write_text

    executed = Path(executed)
    page = executed.with_suffix(".html").name
    nb = nbformat.read(str(executed), as_version=4)
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            big = [k for k in data if k.startswith("image/") and len(data[k]) >= min_bytes]
            for k in big:
                del data[k]
            if big:
                data["text/plain"] = f"[figure: shown in {page}, beside this notebook]"
                n += 1
    if n:
        nb.metadata.setdefault("vaesae", {})["images_in"] = page
        atomic_write_text(executed, nbformat.writes(nb) + "\n")
    return n

