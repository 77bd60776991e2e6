"""Course settings: the class count and the device, from widgets or environment variables.

>>> settings = course_settings()          # shows two widgets in Jupyter
>>> settings.num_classes, settings.device  # later cells read the current values
(10, device(type='cpu'))

Headless runs (pytest --nbval, scripts, CI) never touch the widgets: their defaults come from
``COURSE_NUM_CLASSES`` (2..10, default 10) and ``COURSE_DEVICE`` (auto|cpu|cuda|cuda:N|mps,
default auto), so the same notebook runs on a laptop, in Colab and on a GPU runner. ``auto`` asks
``torch.accelerator`` (``detected_accelerator``) and takes the GPU it names, else the CPU.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from helpers.i18n import _

MIN_CLASSES = 2
MAX_CLASSES = 10  # the embedded digits have ten classes
DEFAULT_CLASSES = 10
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


class SettingsError(ValueError):
    """A course setting (environment variable or argument) has a value we cannot use."""


def parse_num_classes(value: Any, *, source: str = "COURSE_NUM_CLASSES") -> int:
    """Validate a class count: an integer from 2 to 10 (the digits 0..N-1 are kept).

    >>> parse_num_classes("5")
    5
    """
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[+-]?[0-9]+", text):  # not '３' or '٣'
        raise SettingsError(
            _("{source} must be an integer from {low} to {high}, got {value!r}").format(
                source=source, low=MIN_CLASSES, high=MAX_CLASSES, value=str(value))
        )
    number = int(text)
    if not MIN_CLASSES <= number <= MAX_CLASSES:
        raise SettingsError(
            _("{source} must be an integer from {low} to {high}, got {value!r}").format(
                source=source, low=MIN_CLASSES, high=MAX_CLASSES, value=str(value))
        )
    return number


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _legacy_accelerator() -> torch.device | None:
    """The CUDA-then-MPS check that ``torch.accelerator`` replaces (torch < 2.6 has no other)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return None


def detected_accelerator() -> torch.device | None:
    """The accelerator this machine really has, or None: the device-agnostic idiom.

    torch >= 2.6: ``torch.accelerator.current_accelerator()`` once ``torch.accelerator.is_available()``
    says one is there (alone it names the accelerator torch was built for, present or not); older
    torch falls back to the CUDA and MPS checks. ``COURSE_DEVICE=auto`` uses it.

    >>> detected_accelerator() is None  # on a machine without a GPU
    True
    """
    api = getattr(torch, "accelerator", None)
    if api is None or not hasattr(api, "is_available"):
        return _legacy_accelerator()
    return api.current_accelerator() if api.is_available() else None


def available_devices() -> list[str]:
    """Names of the devices this machine really has, CPU first.

    >>> available_devices()[0]
    'cpu'
    """
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    return names


def parse_device(value: Any, *, source: str = "COURSE_DEVICE") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a ``torch.device`` that exists here.

    >>> parse_device("cpu")
    device(type='cpu')
    """
    text = str(value).strip().lower()
    if text in ("", "auto"):
        accelerator = detected_accelerator()
        kind = accelerator.type if accelerator is not None else "cpu"
        if kind == "cuda":
            return torch.device("cuda", 0)
        if kind == "mps":
            return torch.device("mps")
        return torch.device("cpu")  # no accelerator, or one the course does not offer (xpu, ...)
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::([0-9]+))?", text)
    if match:
        if not torch.cuda.is_available():
            raise SettingsError(
                _("{source}={value}, but no CUDA device is visible; use cpu or auto").format(
                    source=source, value=value)
            )
        index = int(match.group(1) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise SettingsError(
                _("{source}={value}, but only {count} CUDA device(s) are visible "
                  "(cuda:0..cuda:{last}); use one of those, cpu or auto").format(
                    source=source, value=value, count=count, last=count - 1)
            )
        return torch.device("cuda", index)
    if text == "mps":
        if not _mps_available():
            raise SettingsError(_("{source}=mps, but no Apple MPS device is available; use cpu or "
                                  "auto").format(source=source))
        return torch.device("mps")
    raise SettingsError(_("{source} must be one of {choices}; got {value!r}").format(
                            source=source, choices=DEVICE_CHOICES, value=str(value)))


def default_num_classes() -> int:
    """The class count from ``COURSE_NUM_CLASSES``, or 10 when it is unset."""
    raw = os.environ.get("COURSE_NUM_CLASSES")
    return DEFAULT_CLASSES if raw is None or raw.strip() == "" else parse_num_classes(raw)


def default_device() -> torch.device:
    """The device from ``COURSE_DEVICE``, or the best available one when it is unset."""
    return parse_device(os.environ.get("COURSE_DEVICE", "auto"))


def _device_name(device: torch.device) -> str:
    return f"{device.type}:{device.index}" if device.type == "cuda" else device.type


@dataclass
class CourseSettings:
    """The two widgets of a chapter; ``num_classes`` and ``device`` read their current values."""

    num_classes_widget: Any
    device_widget: Any

    @property
    def num_classes(self) -> int:
        return parse_num_classes(self.num_classes_widget.value, source=_("class count"))

    @property
    def device(self) -> torch.device:
        return parse_device(self.device_widget.value, source=_("device"))

    def __repr__(self) -> str:
        return f"CourseSettings(num_classes={self.num_classes}, device={_device_name(self.device)!r})"


def course_settings(*, show: bool = True) -> CourseSettings:
    """Build (and, in Jupyter, show) the class-count slider and the device dropdown.

    Uses only widget APIs common to ipywidgets 7.7 (Colab) and 8.

    >>> s = course_settings(show=False); s.num_classes_widget.max
    10
    """
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    classes = widgets.IntSlider(
        value=default_num_classes(), min=MIN_CLASSES, max=MAX_CLASSES, step=1,
        description=_("Number of classes"), continuous_update=False, style=style,
    )
    options = available_devices()
    wanted = _device_name(default_device())
    device = widgets.Dropdown(options=options, value=wanted, description=_("Device"), style=style)
    settings = CourseSettings(classes, device)
    if show:
        from IPython.display import display

        display(widgets.HBox([classes, device]))
    return settings
