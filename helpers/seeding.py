"""Reproducibility: one call seeds Python, NumPy and torch.

>>> seed_everything(0)
0
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int = 0, *, deterministic: bool = True) -> int:
    """Seed ``random``, NumPy and torch (CPU and every CUDA device); return the seed.

    With ``deterministic=True`` it also asks torch for deterministic kernels (cuDNN included), which a
    bit-exact resume needs. Kernels that have no deterministic version only warn.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matmuls on CUDA >= 10.2.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed
