"""Weights for a differently named architecture: rename a state_dict's keys with rules, checked.

>>> mapped = map_keys(checkpoint, {r"stem\\.0\\.": "conv1.", r"blocks\\.(\\d+)\\.": r"layer\\1."}, model)
>>> model.load_state_dict(mapped)
<All keys matched successfully>
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from helpers.checkpoint.prefixes import unwrap_model
from helpers.i18n import _

Rules = Mapping[str, str] | Iterable[tuple[str, str]]
_SHOWN = 4  # keys named per kind of problem in a message


class KeyMapError(ValueError):
    """The renamed keys do not fit the target: the lists name every leftover.

    ``no_home``: ``(checkpoint key, renamed key)`` pairs the target has no tensor for;
    ``unfilled``: target keys no checkpoint key was renamed to; ``mismatched``:
    ``(checkpoint key, renamed key, checkpoint shape, target shape)``; ``merged``: renamed key ->
    the checkpoint keys that all became it.
    """

    def __init__(self, message: str, *, no_home: list[tuple[str, str]], unfilled: list[str],
                 mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]],
                 merged: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.no_home, self.unfilled, self.mismatched, self.merged = (no_home, unfilled,
                                                                    mismatched, merged)


def _compiled(rules: Rules) -> list[tuple[re.Pattern[str], str]]:
    pairs = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    compiled = []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2
                and all(isinstance(part, str) for part in pair)):
            raise TypeError(_("each rule is a (pattern, replacement) pair of strings, as in "
                              "{{r'blocks\\.(\\d+)\\.': r'layer\\1.'}}; got {pair!r}").format(pair=pair))
        pattern, replacement = pair
        try:
            compiled.append((re.compile(pattern), replacement))
        except re.error as exc:
            raise ValueError(_("rule {pattern!r}: not a regular expression ({exc})").format(
                                 pattern=pattern, exc=exc)) from None
    return compiled


def _renamed(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    """The key renamed by the first rule whose pattern matches its beginning (the rest of the key
    is kept); a key no rule matches keeps its name."""
    for pattern, replacement in rules:
        match = pattern.match(key)
        if match:
            try:
                return match.expand(replacement) + key[match.end():]
            except (re.error, IndexError) as exc:
                raise ValueError(_("rule {pattern!r}: cannot use the replacement {replacement!r} "
                                   "({exc})").format(
                                     pattern=pattern.pattern, replacement=replacement, exc=exc)) from None
    return key


def _listed(items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, Tensor) and not nn.parameter.is_lazy(value):
        return tuple(value.shape)
    return None


def map_keys(state_dict: Mapping[str, Any], rules: Rules,
             target: nn.Module | Mapping[str, Any]) -> OrderedDict[str, Any]:
    """Rename the keys of ``state_dict`` for ``target`` (a model or its state_dict), and check.

    ``rules`` are ``(pattern, replacement)`` pairs, a dict or a list, tried in order: the first
    pattern that matches the beginning of a key (``re.match``) replaces that part, so groups
    work (``r"blocks\\.(\\d+)\\."`` -> ``r"layer\\1."``) and the rest of the key is kept. A key no
    rule matches keeps its name. Then every checkpoint tensor must have found a home in
    ``target``, every key of ``target`` must be filled, once, with the same shape; otherwise
    ``KeyMapError`` names the leftovers and nothing is returned. The result is in ``target``'s
    key order, shares the tensors (no copy) and loads with ``load_state_dict`` (strict).

    >>> list(map_keys({"fc.bias": torch.zeros(2)}, {r"fc\\.": "head."}, {"head.bias": torch.ones(2)}))
    ['head.bias']
    """
    compiled = _compiled(rules)
    odd = next((k for k in state_dict if not isinstance(k, str)), None)
    if odd is not None:
        raise TypeError(_("state_dict keys must be strings like 'fc.weight', got {odd!r}; is this a "
                          "state_dict?").format(odd=odd))
    own = unwrap_model(target).state_dict() if isinstance(target, nn.Module) else target
    renamed: dict[str, list[str]] = {}
    for key in state_dict:
        renamed.setdefault(_renamed(key, compiled), []).append(key)
    merged = {new: old for new, old in renamed.items() if len(old) > 1}
    no_home = [(old[0], new) for new, old in renamed.items() if new not in own and len(old) == 1]
    unfilled = [key for key in own if key not in renamed]
    mismatched = []
    for new, old in renamed.items():
        if new in own and len(old) == 1:
            have, want = _shape(state_dict[old[0]]), _shape(own[new])
            if have is not None and want is not None and have != want:
                mismatched.append((old[0], new, have, want))
    if merged or no_home or unfilled or mismatched:
        raise KeyMapError(_message(no_home, unfilled, mismatched, merged), no_home=no_home,
                          unfilled=unfilled, mismatched=mismatched, merged=merged)
    return OrderedDict((key, state_dict[renamed[key][0]]) for key in own)


def _message(no_home: list[tuple[str, str]], unfilled: list[str],
             mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]],
             merged: dict[str, list[str]]) -> str:
    counts = [_("{count} checkpoint tensor(s) without a home").format(count=len(no_home)) if no_home else "",
              _("{count} model tensor(s) not filled").format(count=len(unfilled)) if unfilled else "",
              _("{count} of another shape").format(count=len(mismatched)) if mismatched else "",
              _("{count} name(s) given to several checkpoint keys").format(count=len(merged))
              if merged else ""]
    lines = [_("the key map leaves {counts}:").format(counts=", ".join(c for c in counts if c))]
    if no_home:
        lines.append("  " + _("no home in the model: {keys}").format(keys=_listed(
            [old if old == new else _("{old} (as {new})").format(old=old, new=new)
             for old, new in no_home])))
    if unfilled:
        lines.append("  " + _("not filled: {keys}").format(keys=_listed(unfilled)))
    if mismatched:
        lines.append("  " + _("other shape: {keys}").format(keys=_listed(
            [_("{key}: checkpoint {saved} vs model {own}").format(
                key=f"{old} -> {new}", saved=list(a), own=list(b)) for old, new, a, b in mismatched])))
    if merged:
        lines.append("  " + _("several keys became one: {keys}").format(keys=_listed(
            [f"{new} <- {_(' and ').join(old)}" for new, old in merged.items()])))
    lines.append(_("Fix or add a rule so that each checkpoint key becomes one key of the model: "
                   "compare list(checkpoint) with list(model.state_dict())."))
    return "\n".join(lines)
