"""helpers.checkpoint.keymap: a state_dict renamed for another architecture, every key checked."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers.checkpoint import outputs_equal
from helpers.checkpoint.keymap import KeyMapError, map_keys
from helpers.models import Bottleneck, TinyResNet


class PortedNet(nn.Module):
    """TinyResNet's computation under other layer names (as chapter 3 builds it)."""

    def __init__(self, num_classes: int = 10, width: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layers = nn.ModuleList(Bottleneck(width, width) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        for layer in self.layers:
            x = layer(x)
        return self.head(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


RULES = {r"stem\.0\.": "conv1.", r"stem\.1\.": "bn1.", r"blocks\.(\d+)\.": r"layers.\1.",
         r"fc\.": "head."}


def _source() -> TinyResNet:
    torch.manual_seed(0)
    return TinyResNet(10, width=8, depth=2, dropout=0.1)


def test_the_right_map_loads_strictly_and_gives_the_same_outputs():
    source, ported = _source(), PortedNet()
    state = source.state_dict()
    mapped = map_keys(state, RULES, ported)
    assert list(mapped) == list(ported.state_dict())  # the target's order
    assert mapped["layers.1.reduce.0.weight"] is state["blocks.1.reduce.0.weight"]  # shared, no copy
    assert list(state) == list(source.state_dict())  # the input is unchanged
    ported.load_state_dict(mapped)  # strict
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert outputs_equal(source, ported, x)


def test_rules_as_pairs_the_first_match_wins_and_a_target_state_dict_works():
    state = _source().state_dict()
    pairs = [(r"blocks\.0\.", "layers.0."), (r"blocks\.(\d+)\.", r"layers.\1."),
             *RULES.items()]
    assert list(map_keys(state, pairs, PortedNet().state_dict())) == list(PortedNet().state_dict())
    wrapped = nn.DataParallel(PortedNet())
    assert list(map_keys(state, RULES, wrapped)) == list(PortedNet().state_dict())  # unwrapped


def test_a_missing_rule_names_the_leftovers_both_ways():
    state = _source().state_dict()
    rules = {k: v for k, v in RULES.items() if k != r"stem\.1\."}
    with pytest.raises(KeyMapError) as caught:
        map_keys(state, rules, PortedNet())
    err = caught.value
    stem_bn = [k for k in state if k.startswith("stem.1.")]
    assert [old for old, _ in err.no_home] == stem_bn
    assert err.unfilled == ["bn1." + k.removeprefix("stem.1.") for k in stem_bn]
    assert not err.mismatched and not err.merged
    assert "5 checkpoint tensor(s) without a home, 5 model tensor(s) not filled" in str(err)
    assert "no home in the model: stem.1.weight" in str(err) and "not filled: bn1.weight" in str(err)


def test_a_rule_that_renames_to_a_wrong_name_says_what_it_became():
    rules = {**RULES, r"fc\.": "classifier."}
    with pytest.raises(KeyMapError, match=r"fc\.weight \(as classifier\.weight\)") as caught:
        map_keys(_source().state_dict(), rules, PortedNet())
    assert caught.value.unfilled == ["head.weight", "head.bias"]


def test_other_shapes_and_merged_keys_are_refused():
    with pytest.raises(KeyMapError, match=r"other shape: fc\.weight -> head\.weight: checkpoint "
                                          r"\[10, 8\] vs model \[3, 8\]") as caught:
        map_keys(_source().state_dict(), RULES, PortedNet(num_classes=3))
    assert [new for _, new, _, _ in caught.value.mismatched] == ["head.weight", "head.bias"]
    state = {"a.weight": torch.zeros(2), "b.weight": torch.zeros(2)}
    with pytest.raises(KeyMapError, match=r"several keys became one: x\.weight <- a\.weight and "
                                          r"b\.weight") as caught:
        map_keys(state, {r"[ab]\.": "x."}, {"x.weight": torch.zeros(2)})
    assert caught.value.merged == {"x.weight": ["a.weight", "b.weight"]}


def test_bad_rules_and_inputs_are_explained():
    state = {"fc.weight": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"rule '\(fc': not a regular expression"):
        map_keys(state, {"(fc": "head"}, {"head": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"rule 'fc.*': cannot use the replacement .*invalid group"):
        map_keys(state, {r"fc\.": r"head\1."}, {"head.weight": torch.zeros(2)})
    with pytest.raises(TypeError, match="each rule is a \\(pattern, replacement\\) pair"):
        map_keys(state, [("fc.",)], {})  # type: ignore[list-item]
    with pytest.raises(TypeError, match="keys must be strings"):
        map_keys({0: torch.zeros(2)}, {}, {})  # type: ignore[dict-item]


_name = st.from_regex(r"[a-z]{1,6}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(modules=st.lists(_name, min_size=1, max_size=6, unique=True),
       leaves=st.lists(st.sampled_from(["weight", "bias", "running_mean"]), min_size=1,
                       max_size=3, unique=True),
       new_names=st.lists(_name, min_size=6, max_size=6, unique=True),
       data=st.data())
def test_any_renaming_of_module_names_maps_back_and_a_dropped_rule_is_named(modules, leaves,
                                                                          new_names, data):
    target_names = [n.upper() for n in new_names[: len(modules)]]  # never equal to a source name
    state = {f"{m}.{leaf}": torch.zeros(i + 1) for i, m in enumerate(modules) for leaf in leaves}
    target = {f"{t}.{leaf}": torch.ones(i + 1) for i, t in enumerate(target_names)
              for leaf in leaves}
    rules = {re.escape(m) + r"\.": t + "." for m, t in zip(modules, target_names, strict=True)}
    mapped = map_keys(state, rules, target)
    assert list(mapped) == list(target)
    assert all(mapped[f"{t}.{leaf}"] is state[f"{m}.{leaf}"]
               for m, t in zip(modules, target_names, strict=True) for leaf in leaves)
    dropped = data.draw(st.sampled_from(modules))
    fewer = {k: v for k, v in rules.items() if k != re.escape(dropped) + r"\."}
    with pytest.raises(KeyMapError) as caught:
        map_keys(state, fewer, target)
    assert [old for old, _ in caught.value.no_home] == [f"{dropped}.{leaf}" for leaf in leaves]
    renamed_to = target_names[modules.index(dropped)]
    assert caught.value.unfilled == [f"{renamed_to}.{leaf}" for leaf in leaves]
