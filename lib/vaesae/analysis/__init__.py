"""The study's records turned into results: Tables 1-7, the verdicts against the paper, the statistical tests, the
figures, and the sub-studies' tables (readings, remedies, ablations).

Everything here reads what training wrote (``results/<profile>/...``); nothing trains. Layer: above ``training``
(the notebook helpers in :mod:`~vaesae.analysis.plots` read a run's paths and parameter count), below ``report``.

study       the records gathered (:class:`~vaesae.analysis.study.Study`), Tables 1-7, the verdict table
paper       what the paper reports, as data, and the verdict rule
stats       Welch t-test and bootstrap interval of every claimed difference
figures     Figures 1-11
thresholds  Tables 4-5 and Figures 10-11 from the saved per-neuron arrays (notebook 06)
readings    SPEC §6: the readings' records, the selection rule, its table and figure (notebook 10)
intrinsic   the remedies against Top-k: comparison, verdict, alignment and ceiling tables, figures (notebook 08)
ablation    the ablations' table and figure (notebook 09)
plots       the data and training notebooks' figures and helpers
labels      record column -> the words a figure shows
"""
