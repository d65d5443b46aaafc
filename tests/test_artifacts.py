"""vaesae.artifacts: tables through pandas' LaTeX writer, byte for byte what the hand-written writer gave (issue 20)."""

import numpy as np
import pandas as pd

from vaesae import artifacts


def test_latex_tables_keep_their_bytes():
    df = pd.DataFrame({"dead_pct@0.001": [12.3456789, np.nan], "n & m": [1234.5, 7], "note": ["50% of a_b #1", "a\\b"]})
    assert artifacts._latex(df) == (
        "\\begin{tabular}{lll}\n\\toprule\ndead\\_pct@0.001 & n \\& m & note \\\\\n\\midrule\n"
        "12.35 & 1234 & 50\\% of a\\_b \\#1 \\\\\nnan & 7 & a\\textbackslash{}b \\\\\n\\bottomrule\n\\end{tabular}\n")
    assert artifacts._latex(pd.DataFrame(columns=["a"])) == "\\begin{tabular}{l}\n\\toprule\na \\\\\n\\midrule\n\\bottomrule\n\\end{tabular}\n"


def test_cells_keep_whole_numbers_up_to_a_billion_and_use_an_exponent_from_there():
    cells = [artifacts._fmt(v) for v in (0.012345, 999.94, 114235.6, 999_999_999.0, 4.0551e28, -2.7e12, np.inf, 7)]
    assert cells == ["0.01235", "999.9", "114236", "999999999", "4.055e+28", "-2.7e+12", "inf", "7"]


def test_save_table_writes_csv_markdown_and_latex(tmp_path):
    df = pd.DataFrame({"run": ["topk", "l1"], "dead %": [34.44, 41.7]})
    paths = artifacts.save_table(df, tmp_path, "smoke", "t", title="T", caption="C.")
    assert [p.name for p in paths] == ["t.csv", "t.md", "t.tex"]
    assert (tmp_path / "smoke" / "tables" / "t.tex").read_text() == (
        "% T\n% C.\n\\begin{tabular}{ll}\n\\toprule\nrun & dead \\% \\\\\n\\midrule\ntopk & 34.44 \\\\\nl1 & 41.7 \\\\\n"
        "\\bottomrule\n\\end{tabular}\n")


_ADD_ENTRIES = """
import sys
from pathlib import Path
from vaesae import artifacts
d, who = Path(sys.argv[1]), sys.argv[2]
for i in range(40):
    artifacts._update_index(d, {"name": f"{who}-{i}", "title": "t", "caption": "c", "order": i})
"""


def test_index_updates_from_processes_side_by_side_lose_no_entry(tmp_path):
    # the pipeline runs jobs side by side as processes (06, 08 and 10 at once on the GPU), each adding its tables
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", _ADD_ENTRIES, str(tmp_path), f"p{k}"], env=env) for k in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    names = {e["name"] for e in artifacts.read_index(tmp_path)}
    assert names == {f"p{k}-{i}" for k in range(4) for i in range(40)}
