"""Test configuration shared by every tier."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng():
    """A seeded NumPy generator: tests pass randomness in explicitly."""
    import numpy as np

    return np.random.default_rng(12345)
