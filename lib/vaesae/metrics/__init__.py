"""Evaluation metrics: MIG, neuron-factor mutual information, specialisation, dead neurons, MSE.

References
----------
* Chen, Li, Grosse & Duvenaud (2018), "Isolating Sources of Disentanglement in Variational
  Autoencoders", NeurIPS (arXiv:1802.04942): the Mutual Information Gap (MIG).
* google-research/disentanglement_lib, ``evaluation/metrics/mig.py`` and ``utils.py``
  (``_histogram_discretize``, ``discrete_mutual_info``, ``discrete_entropy``): the estimator
  used here -- each code dimension cut into 20 equal-width bins, plug-in mutual information in
  nats (what ``sklearn.metrics.mutual_info_score`` computes), empirical factor entropy.
* The paper under reproduction, arXiv:2603.18056 ("Fundamental Limits of Neural Network
  Sparsification"): neuron specialisation (the same binned MI between one SAE neuron and one
  factor, divided by the factor's entropy, > 0.5 for some factor) and dead neurons (activation
  rate < 0.001). SPEC.md section 4 is the project's definition of every number below.

Two computational paths give the same numbers:

* a NumPy path for MIG (ten code dimensions): it calls ``np.histogram``/``np.digitize`` exactly
  as disentanglement_lib does and evaluates scikit-learn's ``mutual_info_score`` formula on
  integer contingency tables, so it equals disentanglement_lib to rounding (1e-15);
* a vectorised torch path for thousands of neurons (:func:`mutual_information`) that works on
  whatever device the activations live on. It reproduces NumPy's bin edges bit for bit (same
  float arithmetic in the input's dtype) and builds every neuron's joint (bin, factor class)
  histogram with one ``bincount`` per factor over combined neuron x bin x class indices.
  Sparse activations (mostly exact zeros, as after Top-k) only touch their non-zero entries:
  all zeros of a neuron fall in one bin, whose counts follow by subtraction.

Everything is deterministic; nothing here draws random numbers.

Modules
-------
Evaluation metrics (SPEC §4): one module per metric, pure functions, and one evaluation wrapper.

common          constants (bins, thresholds) and input checks shared by every metric
columns         the metric columns' names (``dead_pct@0.001``, ``spec@0.5``) and their thresholds, without torch
mig             the Mutual Information Gap (Chen et al. 2018; disentanglement_lib's estimator)
mutual_info     neuron-factor mutual information, normalisations, specialised neurons, the firing-rate ceiling
activity        activation rates and dead neurons
reconstruction  reconstruction MSE and the fraction of variance unexplained
alignment       per-neuron analyses of the referee (factor alignment, matching, the ceiling's share)
evaluate        :func:`~vaesae.metrics.evaluate.evaluate`: a model's forward over the evaluation set, every metric
records         a run's per-neuron arrays on disk (``neurons_final.npz``): one compact layout, one reader

Layer: above ``data`` (the evaluation converts images with :func:`vaesae.data.loader.to_float`), below ``training``.
"""
