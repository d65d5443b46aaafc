"""The HTML rendering of an executed notebook: one self-contained page, small.

nbconvert's default (``lab``) template embeds JupyterLab's whole stylesheet (about 265 KB) in
every page, ten times the size of a per-seed notebook's own content. This renders the notebook's
cells and outputs with nbconvert's ``basic`` template (images stay embedded as data: URIs, so the
page opens offline on its own) and adds a short stylesheet of our own plus the syntax colours.

:func:`strip_images` then takes the large images out of the executed ``.ipynb`` (the page keeps them, and the
figures are also saved as files under ``figures/``): each becomes a one-line pointer to the page, and the notebook's
metadata ``vaesae.images_in`` names the page, which :func:`render_file` then never overwrites (issue 17's size
budget: 06-08's notebooks stored every figure three times).
"""

from __future__ import annotations

import html
from pathlib import Path

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


def render_file(executed: str | Path, out: str | Path | None = None) -> Path:
    """Write ``executed`` (an ``.ipynb``) as HTML beside it (or to ``out``), atomically."""
    import nbformat

    from ..io import atomic_write_text

    executed = Path(executed)
    out = Path(out) if out is not None else executed.with_suffix(".html")
    nb = nbformat.read(str(executed), as_version=4)
    if nb.metadata.get("vaesae", {}).get("images_in") and out.exists():
        return out   # the page holds the images the notebook no longer does: keep it
    atomic_write_text(out, notebook_html(nb, title=executed.stem))
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
                data["text/plain"] = f"[figure: embedded in {page}, beside this notebook]"
                n += 1
    if n:
        nb.metadata.setdefault("vaesae", {})["images_in"] = page
        atomic_write_text(executed, nbformat.writes(nb) + "\n")
    return n
