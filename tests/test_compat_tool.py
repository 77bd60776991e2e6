"""tools/compat.py (`make test-compat`): the stack it asks pip for, and its errors."""

import subprocess
import sys

import pytest

from tools import compat


@pytest.mark.parametrize(("torch", "vision"), [("2.6", ">=0.21"), ("2.11", ">=0.26"), ("2.11.0", ">=0.26"),
                                               ("2.14.1", ">=0.29"), ("2.15", ">=0.29")])
def test_torchvision_matches_torch(torch, vision):
    assert compat.torchvision_for(torch) == f"torchvision{vision}"


@pytest.mark.parametrize("bad", ["2.5", "1.13", "latest", "3.0", ""])
def test_unsupported_or_malformed_torch_is_refused(bad):
    with pytest.raises(compat.CompatError, match="torch"):
        compat.torchvision_for(bad)


def test_pins_for_colab_include_ipywidgets_7_and_what_it_needs():
    assert compat.pins("2.11", "7.7.1") == ["torch==2.11.*", "torchvision>=0.26", "ipywidgets==7.7.1",
                                             "widgetsnbextension==3.6.*", "ipython_genutils==0.2.0"]
    assert compat.pins("2.14.1", None) == ["torch==2.14.1", "torchvision>=0.29"]


def test_find_python_finds_this_interpreter_and_refuses_a_missing_one():
    assert compat.find_python(sys.executable) == sys.executable
    with pytest.raises(compat.CompatError, match="no Python '2.1'"):
        compat.find_python("2.1")


def test_bad_arguments_are_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tools.compat", "--python", sys.executable,
                             "--torch", "2.4"], capture_output=True, text=True, cwd=compat.ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: the course needs torch >= 2.6, got '2.4'"]
