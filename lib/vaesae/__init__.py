"""vaesae: hybrid VAE + sparse-autoencoder reproduction of arXiv 2603.18056.

Modules
-------
data      datasets (real files and procedural stand-ins), splits, on-device batch iterator
render    the procedural dSprites and Shapes3D renderers
metrics   MIG, neuron-factor mutual information, dead neurons, reconstruction
io        atomic writes, checksums, provenance records
errors    the one-line user-facing error type and the CLI wrapper
"""

__version__ = "0.1.0"

from .errors import VaesaeError  # noqa: F401
