"""What a reader gets: the HTML report, the generated write-up, the executed notebooks' pages.

page      ``results/<profile>/report.html`` from the tables, figures, notebooks and run records
browser   the real-browser check of the page (headless Chromium: every image loads, every link resolves)
cli       ``python -m vaesae.report`` (this package's ``__main__``)
writeup   ``FINDINGS.md`` and the README's generated parts (``python -m vaesae.report.writeup``)
nbhtml    an executed notebook as one small self-contained HTML page

Layer: above ``analysis``; below :mod:`vaesae.workflow`, which rebuilds the report and renders notebooks.
"""
