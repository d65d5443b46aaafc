"""Benchmarks that print timings (not timed tests).

Usage::

    python -m vaesae.bench metrics [--device cpu|cuda] [--neurons 8192] [--samples 10000]

``metrics`` times the whole evaluation of SPEC.md section 4 at paper scale, excluding the
model's forward pass: MIG over the latent means, per-neuron MI with every factor (all three
normalisations), activation rates, dead fractions and specialised counts at every threshold
(:func:`vaesae.metrics.evaluate.compute_metrics`). Inputs are synthetic and seeded: sparse Top-k
activations (k of the neurons non-zero per sample, half the neurons never active) and a
dense case (every activation non-zero), with dSprites (5 factors) and Shapes3D (6 factors)
factor grids. The table is printed and written to ``results/bench/metrics-<device>.json``.

``train`` (issue #6) times the project's own training step of stages 1, 2 and 3 (paper profile,
batch 512, m = 8192, stage 3 at k = 50, revival on) and, side by side, a plain eager reference
of the same model written here (:func:`reference_stage3_loss`: fp32 + TF32, dense scatter top-k,
no compilation), the per-epoch evaluation (10,000 images, forward pass and every metric), the
agreement of the two paths (top-k indices in fp32, loss in bf16), and projects one seed's and
the whole suite's wall time. It writes ``results/bench/<device-name>.json``::

    python -m vaesae.bench train [--device auto] [--steps 50] [--datasets dsprites,shapes3d]

With ``--concurrent 1,2,3,4`` (issue 17) it first times N concurrent stage-3 runs on one device, each in a
process of its own, over a common window, without and with the CUDA MPS daemon (:func:`run_concurrent`),
and projects the whole paper study on 1 and 8 GPUs with the best number of runs per GPU
(:func:`project_study`); it then writes ``results/bench/<device-name>_concurrent.json``::

    python -m vaesae.bench train --concurrent 1,2,3,4 [--concurrent-window 10] [--no-mps] [--no-reference]

``verify`` (issue #6) trains a short chain (stages 1, 2 and Top-k stage 3 of the profile on a training
subset, fewer epochs) once with the profile's speed switches and once with every switch off, for several
seeds, and prints whether the fast path's dead %, MIG and MSE lie within the reference path's seed-to-seed
noise. It writes ``results/bench/<device-name>_verify_<profile>.json``::

    python -m vaesae.bench verify [--device auto] [--seeds 0,1,2] [--train-subset 65536] [--epochs 3,2,6]

``conv`` (issue 17) times the two convolution stacks alone in several forms (:mod:`vaesae.bench.conv`)::

    python -m vaesae.bench conv [--groups 2,3,4]

Modules
-------
Benchmarks that print timings (not timed tests): ``python -m vaesae.bench {metrics,train,verify,conv,checkpoint,jobs,main-job,project,profile}``.

cli         the command line (``python -m vaesae.bench``; this package's ``__main__``)
metrics     the metrics alone (``metrics``)
steps       one training step of the project and of the plain eager reference, the evaluation, the agreement check
train       ``train``: the single-run timings, the study projection, the JSON result
concurrent  several stage-3 runs on one GPU, with and without the CUDA MPS daemon (``train --concurrent``)
project     the study's wall time projected from the step timings
verify      ``verify``: short chains on the fast and the reference path
conv        ``conv``: where the convolution time goes
checkpoint  ``checkpoint``: a stage-3 checkpoint written in place against in the background
jobs        ``jobs``: a notebook job's own processes, and the smoke study
mainjob     ``main-job``: the README's first command on a fresh clone, set-up and study apart
profile     ``profile``: where one training step's time goes, by operator family (torch.profiler)

``jobs`` times what a notebook job of the pipeline costs in its own processes (the step, papermill and its kernel,
the HTML page) on a job with nothing to train, and with ``--study`` the dSprites smoke study (:mod:`vaesae.bench.jobs`)::

    python -m vaesae.bench jobs [--repeats 3] [--study]

``profile`` runs the project's step eagerly under ``torch.profiler``, charges every kernel to the operator that launched
it and groups the operators into families (convolutions, matmuls, the optimiser, ...), beside the step's wall time on
the project's path (:mod:`vaesae.bench.profile`); it writes ``results/bench/<device-name>_profile.json``::

    python -m vaesae.bench profile [--datasets dsprites,shapes3d] [--stages stage1,stage2,stage3] [--steps 20]

Layer: the top, above :mod:`vaesae.workflow` (``jobs`` builds the step's table with it); nothing imports it.
"""
