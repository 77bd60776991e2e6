from types import SimpleNamespace

import ipywidgets
import pytest
import torch

from helpers import settings
from helpers.settings import (
    SettingsError,
    available_devices,
    course_settings,
    default_device,
    default_num_classes,
    detected_accelerator,
    parse_device,
    parse_num_classes,
)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "11", str(10**6), "", "2.5", "1e3"])
def test_bad_class_counts_are_rejected_with_the_exact_message(value):
    with pytest.raises(SettingsError) as info:
        parse_num_classes(value)
    assert str(info.value) == f"COURSE_NUM_CLASSES must be an integer from 2 to 10, got {value!r}"


@pytest.mark.parametrize("value", [0, -1, 11, 10**6, True])
def test_bad_integer_class_counts_are_rejected(value):
    with pytest.raises(SettingsError, match="must be an integer from 2 to 10"):
        parse_num_classes(value)


@pytest.mark.parametrize("value,expected", [("2", 2), (" 7 ", 7), (10, 10), ("+5", 5)])
def test_good_class_counts(value, expected):
    assert parse_num_classes(value) == expected


def test_environment_overrides_the_class_count(monkeypatch):
    monkeypatch.setenv("COURSE_NUM_CLASSES", "4")
    assert default_num_classes() == 4
    monkeypatch.setenv("COURSE_NUM_CLASSES", "")
    assert default_num_classes() == 10
    monkeypatch.delenv("COURSE_NUM_CLASSES")
    assert default_num_classes() == 10
    monkeypatch.setenv("COURSE_NUM_CLASSES", "0")
    with pytest.raises(SettingsError, match="got '0'"):
        default_num_classes()


def test_unknown_device_is_rejected():
    with pytest.raises(SettingsError) as info:
        parse_device("tpu")
    assert str(info.value) == "COURSE_DEVICE must be one of auto, cpu, cuda, cuda:N, mps; got 'tpu'"


def test_cuda_without_a_gpu_says_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for value in ("cuda", "cuda:0", "CUDA:1"):
        with pytest.raises(SettingsError) as info:
            parse_device(value)
        assert str(info.value) == f"COURSE_DEVICE={value}, but no CUDA device is visible; use cpu or auto"


def test_cuda_index_beyond_the_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SettingsError, match=r"only 1 CUDA device\(s\) are visible \(cuda:0..cuda:0\)"):
        parse_device("cuda:3")
    assert parse_device("cuda") == torch.device("cuda", 0)


def test_mps_without_apple_gpu(monkeypatch):
    monkeypatch.setattr(settings, "_mps_available", lambda: False)
    with pytest.raises(SettingsError, match="no Apple MPS device"):
        parse_device("mps")


@pytest.mark.parametrize("found,expected", [
    (None, torch.device("cpu")),
    (torch.device("cuda"), torch.device("cuda", 0)),
    (torch.device("mps"), torch.device("mps")),
    (torch.device("xpu"), torch.device("cpu")),  # an accelerator the widget does not offer
])
def test_auto_takes_the_accelerator_torch_names(monkeypatch, found, expected):
    monkeypatch.setattr(settings, "detected_accelerator", lambda: found)
    assert parse_device("auto") == expected
    assert parse_device("") == expected


def _fake_accelerator_api(available: bool, built_for: str = "cuda") -> SimpleNamespace:
    """torch.accelerator as on a machine whose torch was built for ``built_for``."""
    return SimpleNamespace(is_available=lambda: available,
                           current_accelerator=lambda: torch.device(built_for))


def test_detected_accelerator_asks_torch_accelerator(monkeypatch):
    # current_accelerator() alone names what torch was built for: a CUDA build says cuda even on
    # a machine without a GPU, so the idiom asks is_available() first.
    monkeypatch.setattr(torch, "accelerator", _fake_accelerator_api(False))
    assert detected_accelerator() is None
    monkeypatch.setattr(torch, "accelerator", _fake_accelerator_api(True, "mps"))
    assert detected_accelerator() == torch.device("mps")


def test_without_torch_accelerator_the_cuda_and_mps_checks_decide(monkeypatch):
    monkeypatch.delattr(torch, "accelerator", raising=False)  # torch < 2.6
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(settings, "_mps_available", lambda: False)
    assert detected_accelerator() is None
    assert parse_device("auto") == torch.device("cpu")
    monkeypatch.setattr(settings, "_mps_available", lambda: True)
    assert detected_accelerator() == torch.device("mps")
    assert parse_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert detected_accelerator() == torch.device("cuda")
    assert parse_device("auto") == torch.device("cuda", 0)


def test_detected_accelerator_agrees_with_this_machine():
    found = detected_accelerator()
    assert (found is None) == (not torch.accelerator.is_available())
    assert found is None or found == torch.accelerator.current_accelerator()
    offered = found is not None and found.type in ("cuda", "mps")
    assert parse_device("auto").type == (found.type if offered else "cpu")


def test_available_devices_lists_only_real_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(settings, "_mps_available", lambda: False)
    assert available_devices() == ["cpu", "cuda:0", "cuda:1"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available_devices() == ["cpu"]


def test_default_device_reads_the_environment(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "tpu")
    with pytest.raises(SettingsError):
        default_device()


def test_widgets_take_their_defaults_from_the_environment(monkeypatch):
    monkeypatch.setenv("COURSE_NUM_CLASSES", "5")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    s = course_settings(show=False)
    assert isinstance(s.num_classes_widget, ipywidgets.IntSlider)
    assert isinstance(s.device_widget, ipywidgets.Dropdown)
    assert (s.num_classes_widget.min, s.num_classes_widget.max) == (2, 10)
    assert list(s.device_widget.options) == available_devices()
    assert s.num_classes == 5 and s.device == torch.device("cpu")
    # a later cell reads the current value, as after the learner moves the slider
    s.num_classes_widget.value = 3
    assert s.num_classes == 3
    assert repr(s) == "CourseSettings(num_classes=3, device='cpu')"


def test_widgets_display_in_a_box(monkeypatch, capsys):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objs: shown.extend(objs))
    course_settings(show=True)
    assert len(shown) == 1 and isinstance(shown[0], ipywidgets.HBox)
    assert len(shown[0].children) == 2
