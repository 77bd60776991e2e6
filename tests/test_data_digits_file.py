"""``helpers.data`` reads the digits from scikit-learn's file without importing scikit-learn."""

import subprocess
import sys

import numpy as np
import pytest

from helpers import data as data_module
from helpers.data import digits_arrays, load_digits


def test_digits_arrays_equal_sklearns_loader():
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images, labels = digits_arrays()
    assert images.dtype == bunch.images.dtype and labels.dtype == np.int64
    assert np.array_equal(images, bunch.images)
    assert np.array_equal(labels, bunch.target)
    assert not images.flags.writeable and not labels.flags.writeable  # cached: read-only


def test_load_digits_does_not_import_sklearn():
    code = ("import sys; from helpers.data import load_digits; load_digits(10); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("layout", ["no_file", "bad_file"])
def test_falls_back_to_sklearn_when_the_file_is_not_as_expected(monkeypatch, tmp_path, layout):
    expected = digits_arrays()
    if layout == "no_file":
        monkeypatch.setattr(data_module, "_digits_file", lambda: None)
    else:
        bad = tmp_path / "digits.csv.gz"
        bad.write_bytes(b"not gzip")
        monkeypatch.setattr(data_module, "_digits_file", lambda: bad)
    digits_arrays.cache_clear()
    try:
        images, labels = digits_arrays()
        assert np.array_equal(images, expected[0]) and np.array_equal(labels, expected[1])
    finally:
        digits_arrays.cache_clear()


def test_missing_sklearn_is_explained(monkeypatch):
    monkeypatch.setattr(data_module, "_digits_file", lambda: None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails
    digits_arrays.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install scikit-learn"):
            load_digits(10)
    finally:
        digits_arrays.cache_clear()
