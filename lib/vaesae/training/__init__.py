"""Training: the step engine, the stages, and the drivers of the sub-studies.

train      the three stages and the follow-ups (SPEC §3), resumable, with per-epoch records: a run is resolved
           (:func:`~vaesae.training.train.resolve_run`), built (:func:`~vaesae.training.train.build_run`), fitted
           (:func:`~vaesae.training.train.fit`) and recorded (:func:`~vaesae.training.train.record_run`);
           ``python -m vaesae.training.train``
engine     :class:`~vaesae.training.engine.StepEngine`: one optimiser step, the reference and the fast paths
remedies   stage 3 with every remedy (notebook 08)
ablations  the ablations of Top-k stage 3 and their variants (notebook 09)
readings   stage 2 and stage 3's warm-up under every SAE reading, chains side by side (notebook 10)

Layer: above ``metrics`` and ``model``, below ``analysis``.
"""
