"""Helpers for the course "PyTorch model engineering, from definition to checkpoint".

Each module does one thing; the notebooks import from them directly, e.g.

>>> from helpers.data import load_digits
>>> from helpers.checkpoint import save_checkpoint, load_checkpoint

Importing this package itself is cheap: it does not import torch.
"""

__version__ = "0.1.0"
