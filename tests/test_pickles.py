import sys
import types

import torch

from helpers.pickles import public_name, public_names


def _fake_package(monkeypatch):
    """``fakepkg`` re-exports ``Thing`` from its private module ``fakepkg._impl``, as pathlib does
    with ``pathlib._local`` on Python 3.13."""
    impl = types.ModuleType("fakepkg._impl")

    class Thing:
        pass

    impl.Thing = Thing
    impl.Hidden = type("Hidden", (), {})
    pkg = types.ModuleType("fakepkg")
    pkg.Thing = Thing
    pkg.Hidden = type("Hidden", (), {})  # the same name, another object: not the same thing
    monkeypatch.setitem(sys.modules, "fakepkg", pkg)
    monkeypatch.setitem(sys.modules, "fakepkg._impl", impl)


def test_a_private_module_path_becomes_the_public_one(monkeypatch):
    _fake_package(monkeypatch)
    assert public_name("fakepkg._impl.Thing") == "fakepkg.Thing"
    assert public_name("fakepkg._impl.Hidden") == "fakepkg._impl.Hidden"


def test_torch_classes_get_their_public_path():
    assert public_name("torch.nn.modules.conv.Conv2d") == "torch.nn.Conv2d"
    assert public_name("torch._utils._rebuild_tensor_v2") == "torch._utils._rebuild_tensor_v2"
    assert public_name("builtins.getattr") == "builtins.getattr"


def test_modules_that_are_not_imported_are_never_imported():
    name = "surely_not_imported_module_xyz.sub.func"
    assert public_name(name) == name and "surely_not_imported_module_xyz" not in sys.modules
    assert public_name("getattr") == "getattr"


def test_the_same_list_on_every_python(tmp_path):
    from pathlib import Path

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "marker",))

    torch.save({"note": Payload()}, tmp_path / "f.pt")
    raw = torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "f.pt")
    assert public_names(raw) == ["builtins.getattr", "pathlib.Path", f"pathlib.{type(Path()).__name__}"]
    assert public_names(["b.x", "a.y", "b.x"]) == ["a.y", "b.x"]
