"""The learner's notebook, seen from a checker: the cells run so far, re-run on other inputs.

Some answers are code that builds an object once (a head sized from the old one); whether it
was written the safe way shows only when the same cell runs on another input. Outside IPython
(a script, a unit test) there is no history, and these functions return None or nothing.

>>> last_cell(r"^finetune_net\\s*=")  # the most recent cell that assigns finetune_net
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Mapping
from typing import Any


def cell_history() -> list[str]:
    """The sources of the cells run so far in this IPython kernel (empty outside IPython).

    >>> cell_history()[-1]  # in a notebook: the cell running now
    'cell_history()[-1]'
    """
    try:
        from IPython import get_ipython
    except ImportError:  # no IPython: a plain script or a test
        return []
    shell = get_ipython()
    if shell is None:
        return []
    return [str(cell) for cell in shell.user_ns.get("In", []) if cell]


def code_lines(source: str) -> list[str]:
    """The source's code lines without comments and blank lines (to compare with a scaffold).

    >>> code_lines("x = 1  # set x\\n\\n# done\\npass")
    ['x = 1', 'pass']
    """
    lines = []
    for line in source.splitlines():
        code = re.sub(r"\s+#.*$|^\s*#.*$", "", line).rstrip()
        if code.strip():
            lines.append(code)
    return lines


def last_cell(pattern: str) -> str | None:
    """The most recent cell whose code matches the regular expression ``pattern`` (multiline).

    >>> last_cell(r"^finetune_net\\s*=")  # None outside IPython
    """
    regex = re.compile(pattern, re.MULTILINE)
    for source in reversed(cell_history()):
        if regex.search("\n".join(code_lines(source))):
            return source
    return None


def cell_untouched(pattern: str, scaffold: str) -> bool | None:
    """Whether the last cell matching ``pattern`` still holds ``scaffold`` (comments ignored).

    None when the history is unavailable (outside IPython, or no such cell was run).

    >>> cell_untouched(r"^finetune_net\\s*=", SCAFFOLD_FROZEN)  # True, False or None
    """
    source = last_cell(pattern)
    if source is None:
        return None
    return code_lines(source) == code_lines(scaffold)


def rerun_cell(source: str, namespace: dict[str, Any],
               patches: Mapping[str, Any] = {}) -> dict[str, Any] | None:  # noqa: B006
    """Run a learner's cell again in a copy of ``namespace``; the copy, or None if it failed.

    ``patches`` maps ``"module.attr"`` to a stand-in for the run (e.g. a resnet18 with an unusual
    head), so that the checker sees what the learner's code does with another input. Output is
    swallowed.

    >>> rerun_cell("y = x + 1", {"x": 1})["y"]
    2
    """
    from unittest import mock

    from IPython.core.inputtransformer2 import TransformerManager

    scope = dict(namespace)
    with contextlib.ExitStack() as stack:
        for target, value in patches.items():
            module_name, attr = target.rsplit(".", 1)
            module = __import__(module_name, fromlist=[attr])
            stack.enter_context(mock.patch.object(module, attr, value))
            scope[attr] = value
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        try:
            code = TransformerManager().transform_cell(source)
            exec(compile(code, "<exercise cell>", "exec"), scope)  # noqa: S102
        except Exception:  # the re-run is a probe; a failure says nothing about the answer
            return None
    return scope


def user_namespace() -> dict[str, Any]:
    """The notebook's global namespace, a copy (empty outside IPython).

    >>> "settings" in user_namespace()  # in a chapter notebook
    True
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    shell = get_ipython()
    return dict(shell.user_ns) if shell is not None else {}
