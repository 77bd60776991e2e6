"""A .pt2 from torch < 2.7 (an older archive layout) is checked like a new one, not refused."""

import io
import pathlib
import zipfile

import torch

from helpers.checkpoint.archive import pt2_problem


def _legacy_archive(state_dict_bytes: bytes) -> bytes:
    """The layout torch.export.save wrote up to torch 2.6 (members as torch 2.6 names them)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("serialized_exported_program.json", "{}")
        archive.writestr("serialized_state_dict.pt", state_dict_bytes)
        archive.writestr("version", "8.0")
    return out.getvalue()


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class _Payload:
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path("never-created"),))


def test_a_legacy_archive_of_tensors_is_accepted():
    assert pt2_problem(_legacy_archive(_saved({"weight": torch.zeros(2, 3)}))) is None


def test_a_legacy_archive_with_a_pickled_payload_is_refused():
    problem = pt2_problem(_legacy_archive(_saved({"weight": _Payload()})))
    assert problem and "serialized_state_dict.pt (not loadable with weights_only=True)" in problem
    assert not pathlib.Path("never-created").exists()


def test_a_zip_that_is_neither_layout_is_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("something.json", "{}")
    assert "not in the archive format" in pt2_problem(out.getvalue())
