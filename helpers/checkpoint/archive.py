"""Zip archives looked at before torch reads them: how much they inflate, what a ``.pt2`` would run.

>>> with zipfile.ZipFile("runs/last.pt") as archive:  # doctest: +SKIP
...     inflation_problem(archive, os.path.getsize("runs/last.pt")) is None
True

``torch.save`` stores its members uncompressed, so their sizes add up to about the file's size; a
member that inflates far beyond it (a zip bomb: 1 MiB on disk, 1 GiB in memory) is refused before
anything is decompressed. A ``.pt2`` (``torch.export.save``) may hold entries that torch's own
reader unpickles with ``weights_only=False`` (weights or constants marked ``use_pickle``, opaque
or TorchScript objects, payloads that fail a safe load) or compiled code (AOTInductor): those run
code when loaded, so ``pt2_problem`` names them before ``torch.export.load`` sees the file.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import torch

from helpers.checkpoint.atomic import _size
from helpers.i18n import _

# What a load may inflate to: twice the file plus 1 MiB (torch.save's members are stored as is).
INFLATION_FACTOR, INFLATION_SLACK = 2, 1 << 20
# Parts of a .pt2 that load native code or unpickle objects by design.
_CODE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
_PICKLED_PREFIXES = ("custom_obj_", "opaque_obj_")


def inflation_limit(file_size: int) -> int:
    """The most bytes the members of a ``file_size``-byte archive may inflate to.

    >>> inflation_limit(1000)
    1050576
    """
    return INFLATION_FACTOR * file_size + INFLATION_SLACK


def inflation_problem(archive: zipfile.ZipFile, file_size: int) -> str | None:
    """Why ``archive`` would inflate too much to load (a zip bomb), or None when it is fine."""
    infos = archive.infolist()
    total = sum(info.file_size for info in infos)
    if total <= inflation_limit(file_size):
        return None
    biggest = max(infos, key=lambda info: info.file_size)
    return (_("its zip members would inflate to {total} ({filename!r} alone to {biggest}) from "
              "{on_disk} on disk; a file written by torch.save never inflates like that (a zip "
              "bomb?)").format(total=_size(total), filename=biggest.filename,
                               biggest=_size(biggest.file_size), on_disk=_size(file_size)))


def _member(archive: zipfile.ZipFile, name: str) -> tuple[str, str]:
    """(name without the archive's root folder, that root)."""
    root, _, rest = name.partition("/")
    return (rest, root) if rest else (name, "")


def _pickled_config_entries(archive: zipfile.ZipFile, name: str) -> list[str]:
    try:
        config = json.loads(archive.read(name).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return [_("{name} (not valid JSON)").format(name=name)]
    entries: Any = config.get("config", {}) if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        return [_("{name} (not a payload config)").format(name=name)]
    found = []
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            found.append(_("{name} (a malformed entry)").format(name=fqn))
        elif meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(_PICKLED_PREFIXES):
            found.append(f"{fqn} (use_pickle)")
    return found


def _loads_safely(data: bytes) -> bool:
    try:
        if data.startswith(b"PK"):  # a torch.save zip inside the archive: bounded as well
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                if inflation_problem(inner, len(data)):
                    return False
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception:
        return False
    return True


def pt2_problem(data: bytes) -> str | None:
    """Why loading the ``.pt2`` archive in ``data`` could run code, or None when nothing would.

    >>> pt2_problem(open("runs/export/digits.pt2", "rb").read()) is None  # doctest: +SKIP
    True
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return None  # not a zip at all: torch.export.load refuses it without unpickling anything
    with archive:
        problem = inflation_problem(archive, len(data))
        if problem:
            return problem
        names = [_member(archive, n) for n in archive.namelist()]
        members = {rest for rest, _ in names}
        # torch < 2.7 wrote an older layout: the program as JSON, tensors in torch.save files.
        legacy = {"serialized_exported_program.json", "version"} <= members
        if "archive_format" not in members and not legacy:
            return _("it is not in the archive format of torch.export.save (no archive_format entry)")
        pickled: list[str] = []
        for (rest, _kind), name in zip(names, archive.namelist(), strict=True):
            if rest.startswith(_CODE_DIRS) or rest.endswith((".so", ".dll", ".dylib")):
                return _("it holds compiled code ({rest}), which loading would run").format(rest=rest)
            if rest.endswith(("_weights_config.json", "_constants_config.json")):
                pickled += _pickled_config_entries(archive, name)
            elif rest.endswith((".pt", ".pkl")) and not _loads_safely(archive.read(name)):
                pickled.append(_("{name} (not loadable with weights_only=True)").format(name=rest))
        if pickled:
            shown = ", ".join(pickled[:3]) + (f" and {len(pickled) - 3} more" if len(pickled) > 3
                                              else "")
            return (_("it holds pickled Python objects that torch.export.load would unpickle with "
                      "weights_only=False: {shown}").format(shown=shown))
    return None


__all__ = ["inflation_limit", "inflation_problem", "pt2_problem"]
