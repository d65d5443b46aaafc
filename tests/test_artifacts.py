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


def test_save_table_writes_csv_markdown_and_latex(tmp_path):
    df = pd.DataFrame({"run": ["topk", "l1"], "dead %": [34.44, 41.7]})
    paths = artifacts.save_table(df, tmp_path, "smoke", "t", title="T", caption="C.")
    assert [p.name for p in paths] == ["t.csv", "t.md", "t.tex"]
    assert (tmp_path / "smoke" / "tables" / "t.tex").read_text() == (
        "% T\n% C.\n\\begin{tabular}{ll}\n\\toprule\nrun & dead \\% \\\\\n\\midrule\ntopk & 34.44 \\\\\nl1 & 41.7 \\\\\n"
        "\\bottomrule\n\\end{tabular}\n")
