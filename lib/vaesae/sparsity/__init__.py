"""Sparsifiers: interchangeable classes behind one interface (:mod:`vaesae.sparsity.base`), one module each,
registered by name. Importing the package registers every one of them, so
:func:`vaesae.sparsity.base.make_sparsifier` finds them all.

base        the interface, the registry, the schedules, :data:`~vaesae.sparsity.base.REMEDY_READINGS`
topk        Top-k (the paper's), l1: L1 (the paper's comparison)
topk_aux, topk_init, batch_topk, elastic
            the remedies of issue 9 (Gao et al.'s auxiliary loss; unit-norm decoder with a pre-bias, re-initialised
            (topk_init) or folded (topk_fold, in topk_init's module); BatchTopK; an adaptive elastic net); no remedy
            module imports another (an independence contract in pyproject.toml)

Layer: on the base modules only.
"""

from . import batch_topk, elastic, l1, topk, topk_aux, topk_init  # noqa: F401 - registers every sparsifier
