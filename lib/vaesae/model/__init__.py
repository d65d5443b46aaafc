"""The hybrid VAE-SAE and the mechanisms that act on its SAE.

hybrid   :class:`~vaesae.model.hybrid.HybridVAESAE`, :class:`~vaesae.model.hybrid.SAE`, the losses (SPEC §2)
revival  bias boosting and re-initialisation of dead SAE neurons (SPEC §3.4); here rather than in ``sparsity``
         because it acts on the SAE's parameters (:class:`~vaesae.model.hybrid.SAE`), and the model imports the
         sparsifiers

Layer: above ``sparsity`` (the model calls Top-k and the L1 penalty), below ``training``.
"""
