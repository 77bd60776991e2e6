"""The source article's code as written, defects included: chapter 1 runs it before fixing it.

The article stacks ``Bottleneck`` blocks in its ``TinyResNet`` but never defines ``Bottleneck``.
Neither does this module, so building the model raises the article's real ``NameError``, however
often it runs and whatever a notebook has defined (a name is looked up in the module that holds
the code). The code is the article's, so it keeps its names and has no type hints; the course's
working versions are ``helpers.models.Bottleneck`` and ``helpers.models.TinyResNet``.

>>> TinyResNet()
Traceback (most recent call last):
NameError: name 'Bottleneck' is not defined
"""

# ruff: noqa: F821  (Bottleneck is undefined on purpose: that is the article's defect)

from torch import nn

__all__ = ["TinyResNet"]


class TinyResNet(nn.Module):
    def __init__(self, n_blocks=4):
        super().__init__()
        self.blocks = nn.ModuleList([Bottleneck(64, 64) for _ in range(n_blocks)])

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x
