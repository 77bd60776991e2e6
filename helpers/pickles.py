"""The names a pickle refers to, written the way you would import them.

>>> public_names(torch.serialization.get_unsafe_globals_in_checkpoint("runs/ch3/innocent.pt"))
['builtins.getattr', 'pathlib.Path', 'pathlib.PosixPath']

A pickle records where a class or function is *defined*, and that is often a private module:
Python 3.13 defines ``pathlib.Path`` in ``pathlib._local``, torch defines ``nn.Conv2d`` in
``torch.nn.modules.conv``. The same file then lists other names under other versions. These
functions give the shortest public path to the same object instead, so a list of names reads the
same everywhere. They never import anything: a name from a module that is not imported yet (the
file may name any module, and importing one runs its code) is returned as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

_MISSING = object()


def public_name(name: str) -> str:
    """The shortest ``package.attr`` path, among already-imported modules, to the object ``name``.

    >>> public_name("pathlib._local.PosixPath")  # on Python 3.13
    'pathlib.PosixPath'
    """
    module, _, attr = name.rpartition(".")
    if not module or module not in sys.modules:
        return name
    target = getattr(sys.modules[module], attr, _MISSING)
    if target is _MISSING:
        return name
    parts = module.split(".")
    for length in range(1, len(parts)):
        prefix = ".".join(parts[:length])
        if any(p.startswith("_") for p in parts[:length]):
            break  # a private package never makes a public path
        if getattr(sys.modules.get(prefix), attr, _MISSING) is target:
            return f"{prefix}.{attr}"
    return name


def public_names(names: Iterable[str]) -> list[str]:
    """``public_name`` of each name, sorted and without repeats.

    >>> public_names(["torch.nn.modules.conv.Conv2d", "builtins.getattr"])
    ['builtins.getattr', 'torch.nn.Conv2d']
    """
    return sorted({public_name(name) for name in names})
