"""Wrapper prefixes (``module.``, ``_orig_mod.``) and the wrappers that add them.

>>> list(strip_prefixes({"module.fc.bias": 0}))
['fc.bias']
"""

from __future__ import annotations

import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from helpers.checkpoint.errors import WRAPPER_PREFIXES
from helpers.i18n import _


def _strip_key(key: str, prefixes: tuple[str, ...]) -> str:
    while True:
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        else:
            return key


def _checked_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Prefixes as a tuple of module paths ending with '.' (``module.``, ``a.b.``), none starting
    with another; anything else (``"."``, ``".."``, ``"a..``, a non-string) raises ``ValueError``."""
    if isinstance(prefixes, str):
        raise ValueError(_("prefixes must be a list or tuple of strings, got the string {prefixes!r}; "
                           "write ({prefixes!r},)").format(prefixes=prefixes))
    prefixes = tuple(prefixes)
    for prefix in prefixes:
        if not isinstance(prefix, str) or not re.fullmatch(r"([^.]+\.)+", prefix) or any(
                other != prefix and other.startswith(prefix) for other in prefixes):
            raise ValueError(_("prefixes must be module paths ending with '.' (like 'module.'), with no "
                               "empty part and none starting with another; got {prefixes}").format(
                                 prefixes=prefixes))
    return prefixes


def strip_prefixes(state_dict: Mapping[str, Any],
                   prefixes: Iterable[str] = WRAPPER_PREFIXES) -> OrderedDict[str, Any]:
    """A new state_dict without wrapper prefixes at the start of its keys, in any order and repeat.

    ``module._orig_mod.fc.weight`` becomes ``fc.weight``; ``modules.0.weight`` and ``module_x.bias``
    are left alone because they do not start with a whole prefix. Keys without a prefix stay as they
    are (a mixed dict is fine), the order of the keys is kept, the tensors are shared, not copied,
    and the ``_metadata`` attribute of a ``model.state_dict()`` is carried over with stripped keys.
    The input is not changed. Raises ``ValueError`` when two keys would become the same key.

    Unlike ``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present`` (one prefix per call,
    in place, renamed keys moved to the end) it keeps the order and strips prefixes in any mix and
    repeat; the metadata's module paths are stripped by whole path parts (``_stripped_metadata``).

    >>> list(strip_prefixes({"module._orig_mod.fc.bias": 0, "modules.0.w": 1}))
    ['fc.bias', 'modules.0.w']
    """
    prefixes = _checked_prefixes(prefixes)
    odd = next((k for k in state_dict if not isinstance(k, str)), None)
    if odd is not None:
        raise ValueError(_("state_dict keys must be strings like 'fc.weight', got {odd!r} ({type}); is "
                           "this a state_dict?").format(odd=odd, type=type(odd).__name__))
    renamed: dict[str, list[str]] = {}
    for key in state_dict:
        renamed.setdefault(_strip_key(key, prefixes), []).append(key)
    clashes = {new: old for new, old in renamed.items() if len(old) > 1}
    if clashes:
        new, old = next(iter(clashes.items()))
        raise ValueError(_("stripping {prefixes} would merge {n_old} keys into {new!r}: {old}; the "
                           "state_dict mixes a wrapped and an unwrapped copy of the same tensor").format(
                             prefixes=prefixes, n_old=len(old), new=new, old=old))
    result: OrderedDict[str, Any] = OrderedDict(
        (_strip_key(key, prefixes), state_dict[key]) for key in state_dict)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        result._metadata = _stripped_metadata(metadata, prefixes)  # type: ignore[attr-defined]
    return result


def _stripped_metadata(metadata: Mapping[str, Any], prefixes: tuple[str, ...]) -> OrderedDict:
    """The module paths of ``_metadata`` with whole prefixes stripped: ``module`` and ``module.fc``
    become the root ``''`` and ``fc``; ``ab`` stays ``ab`` for the prefix ``a.b.`` (torch's
    ``consume_prefix_in_state_dict_if_present`` compares ``prefix.replace('.', '')`` and would
    make it the root). A stripped path replaces an unstripped one it meets (the inner module's
    root entry wins over the wrapper's)."""
    stripped: OrderedDict[str, Any] = OrderedDict()
    for name, value in metadata.items():
        new = _strip_key(f"{name}.", prefixes)[:-1] if name else ""
        if new in stripped and new == name:
            continue
        stripped[new] = value
    return stripped


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DataParallel, DistributedDataParallel and ``torch.compile`` wrappers.

    >>> unwrap_model(nn.DataParallel(net)) is net
    True
    """
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # only loaded once torch.compile ran
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
            model = model._orig_mod
        else:
            return model
