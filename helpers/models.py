"""Model blocks used across the chapters: a residual ``Bottleneck`` and ``TinyResNet``.

>>> net = TinyResNet(num_classes=10)
>>> net(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from torch import Tensor, nn

from helpers.i18n import _


class Bottleneck(nn.Module):
    """Residual bottleneck: 1x1 reduce -> 3x3 -> 1x1 expand, plus the input (the "skip").

    When the stride or the channel count changes, the skip path gets a 1x1 projection so that the
    two tensors can be added.

    >>> Bottleneck(64, 64)(torch.zeros(1, 64, 8, 8)).shape
    torch.Size([1, 64, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1,
                 reduction: int = 4) -> None:
        super().__init__()
        mid = max(out_channels // reduction, 1)
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid, 1, bias=False),
                                    nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.conv = nn.Sequential(nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False),
                                  nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.expand = nn.Sequential(nn.Conv2d(mid, out_channels, 1, bias=False),
                                    nn.BatchNorm2d(out_channels))
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.expand(self.conv(self.reduce(x))) + self.shortcut(x))


class TinyResNet(nn.Module):
    """A small ResNet: a stem, ``depth`` ``Bottleneck`` blocks in an ``nn.ModuleList``, a head ``fc``.

    ``depth`` is a constructor argument, so the same class builds deep or shallow nets; the loop in
    ``forward`` runs however many blocks there are. ``forward_features`` returns the pooled
    ``width``-dimensional features that ``fc`` classifies.

    >>> TinyResNet(num_classes=5, depth=2).fc
    Linear(in_features=64, out_features=5, bias=True)
    """

    def __init__(self, num_classes: int = 10, *, in_channels: int = 1, width: int = 64,
                 depth: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(_("depth must be at least 1, got {depth}").format(depth=depth))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList([Bottleneck(width, width) for _ in range(depth)])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.pool(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared tensors counted once).

    >>> count_parameters(nn.Linear(4, 2))
    10
    """
    seen = {id(p): p for p in model.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in seen.values())


def parameter_table(model: nn.Module, *, depth: int = 1) -> str:
    """A text table of parameter counts per child module, ``depth`` levels down, with a total.

    >>> print(parameter_table(nn.Sequential(nn.Linear(4, 2))))  # doctest: +NORMALIZE_WHITESPACE
    module  type    parameters
    0       Linear          10
    total                   10
    """
    rows: list[tuple[str, str, int]] = []

    def walk(module: nn.Module, prefix: str, level: int) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if level < depth and any(True for _ in child.children()):
                walk(child, full + ".", level + 1)
            else:
                rows.append((full, type(child).__name__, count_parameters(child)))

    walk(model, "", 1)
    rows.append(("total", "", count_parameters(model)))
    w0 = max(len("module"), *(len(r[0]) for r in rows))
    w1 = max(len("type"), *(len(r[1]) for r in rows))
    w2 = max(len("parameters"), *(len(f"{r[2]:,}") for r in rows))
    lines = [f"{'module':<{w0}}  {'type':<{w1}}  {'parameters':>{w2}}"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c:>{w2},}" for a, b, c in rows]
    return "\n".join(lines)
