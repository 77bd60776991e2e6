"""strip_prefixes: property tests over random key sets, wrapper prefixes and look-alike names."""

from collections import OrderedDict

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from helpers.checkpoint import WRAPPER_PREFIXES, strip_prefixes, unwrap_model

# Segment names include look-alikes that start with "module" or "_orig" but are not prefixes.
SEGMENTS = ["fc", "weight", "bias", "0", "1", "stem", "blocks", "modules", "module_x", "modulex",
            "_orig_mod_", "_orig", "orig_mod", "bn", "running_mean"]
# Real submodules may be called "module" or "_orig_mod" deeper down; only leading ones are wrappers.
INNER = SEGMENTS + ["module", "_orig_mod"]

base_keys = st.builds(
    lambda first, rest: ".".join([first, *rest]),
    st.sampled_from(SEGMENTS), st.lists(st.sampled_from(INNER), min_size=0, max_size=4))
wrappers = st.lists(st.sampled_from(WRAPPER_PREFIXES), min_size=0, max_size=4).map("".join)


def _data_parallel(module):
    """``nn.DataParallel``, keeping the module on the CPU (one visible GPU would move it)."""
    wrapped = nn.DataParallel(module)  # without GPUs it simply calls the module
    module.cpu()
    return wrapped


@st.composite
def prefixed_state_dicts(draw):
    """(original keys, prefixed keys) with a random wrapper stack per key, mixed within one dict."""
    keys = draw(st.lists(base_keys, min_size=1, max_size=12, unique=True))
    prefixed = [draw(wrappers) + key for key in keys]
    return keys, prefixed


@given(prefixed_state_dicts())
def test_strips_any_stack_of_wrapper_prefixes_and_keeps_order(case):
    keys, prefixed = case
    values = [torch.tensor(float(i)) for i in range(len(keys))]
    state = OrderedDict(zip(prefixed, values, strict=True))
    before = list(state.items())
    result = strip_prefixes(state)
    assert list(result) == keys
    assert all(result[k] is v for k, v in zip(keys, values, strict=True))  # shared, not copied
    assert list(state.items()) == before  # the input is untouched
    assert result is not state


@given(st.lists(base_keys, min_size=1, max_size=12, unique=True))
def test_never_touches_keys_without_a_leading_prefix(keys):
    state = {key: torch.zeros(1) for key in keys}
    assert list(strip_prefixes(state)) == keys


@given(prefixed_state_dicts())
def test_stripping_twice_changes_nothing(case):
    _, prefixed = case
    once = strip_prefixes(dict.fromkeys(prefixed, 0))
    assert strip_prefixes(once) == once


@pytest.mark.parametrize("key", ["modules.0.w", "module_x.b", "modulex.w", "_orig_mod_.w",
                                 "stem.module.w", "fc._orig_mod.bias"])
def test_look_alike_keys_stay(key):
    assert list(strip_prefixes({key: 1})) == [key]


def test_nested_and_repeated_prefixes():
    state = {"module._orig_mod.fc.weight": 1, "_orig_mod.module.module.fc.bias": 2}
    assert strip_prefixes(state) == {"fc.weight": 1, "fc.bias": 2}


def test_metadata_is_kept_with_stripped_keys():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    wrapped = _data_parallel(_data_parallel(net))
    state = wrapped.state_dict()
    assert any(k.startswith("module.module.") for k in state._metadata)
    result = strip_prefixes(state)
    assert set(result._metadata) == set(net.state_dict()._metadata)
    assert result._metadata["1"] == net.state_dict()._metadata["1"]  # BatchNorm's version entry
    assert "module" in state._metadata  # the input's metadata is untouched
    fresh = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    fresh.load_state_dict(result)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                  net.state_dict().values(), strict=True))


def test_a_clash_between_wrapped_and_unwrapped_copies_is_an_error():
    with pytest.raises(ValueError, match="'fc.weight'"):
        strip_prefixes({"module.fc.weight": 1, "fc.weight": 2})


def test_slicing_recipe_mangles_unprefixed_keys_but_strip_prefixes_does_not():
    """The widespread ``{k[7:]: v}`` recipe assumes every key starts with ``module.``."""
    net = nn.Linear(2048, 10)
    state = net.state_dict()  # fc-like keys: "weight", "bias"; give them a parent name
    state = OrderedDict((f"fc.{k}", v) for k, v in state.items())
    sliced = {k[7:]: v for k, v in state.items()}
    assert set(sliced) == {"fc.weight"[7:], "fc.bias"[7:]}
    assert "" in sliced  # "fc.bias" is exactly 7 characters long
    assert set(sliced).isdisjoint(state)
    assert strip_prefixes(state) == state
    model = nn.Sequential(OrderedDict(fc=nn.Linear(2048, 10)))
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(sliced)
    model.load_state_dict(strip_prefixes(state))


def test_unwrap_model_sees_through_nested_wrappers():
    net = nn.Linear(3, 2)
    assert unwrap_model(net) is net
    assert unwrap_model(nn.DataParallel(nn.DataParallel(net))) is net


def test_compiled_model_keys_carry_orig_mod_and_are_stripped():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    compiled = torch.compile(net)  # wrapping only; nothing is compiled until it is called
    wrapped = nn.DataParallel(compiled)
    assert all(k.startswith("module._orig_mod.") for k in wrapped.state_dict())
    assert unwrap_model(wrapped) is net
    assert list(strip_prefixes(wrapped.state_dict())) == list(net.state_dict())
