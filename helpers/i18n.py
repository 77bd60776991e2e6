"""The helpers' messages in the learner's language: English by default, Chinese for ``COURSE_LANG=zh``.

>>> print(_("the kernel died"))  # with COURSE_LANG=zh: 内核崩溃了
the kernel died

Every message a learner reads goes through ``_()`` (or ``ngettext`` when it counts something),
the standard :mod:`gettext` machinery. The language is read at call time from ``COURSE_LANG``
(the Chinese notebooks set it in their first code cell; a headless run or a CLI honours it too),
unless ``set_language()`` fixed it. Placeholders are named and filled after the lookup, so the
English text is the catalog key: ``_("{name} failed").format(name=what)``, never an f-string.
Verdict tags (``[OK]``, ``[TODO]``, ``[TRY AGAIN]``, ``[expected error]``) stay outside ``_()``.

The catalog is ``helpers/locale/zh/LC_MESSAGES/helpers.po``, compiled to ``helpers.mo`` next to
it; both are committed (a non-editable install from git ships the ``.mo`` as package data).
Maintainers refresh them with Babel (requirements-dev.txt), from the repository root, then fill
the new or fuzzy entries of the .po and compile again (tests/test_i18n.py checks all three)::

    pybabel extract -F babel.cfg -k N_ --no-wrap -o build/helpers.pot .
    pybabel update -i build/helpers.pot -d helpers/locale -D helpers -l zh --no-wrap --ignore-obsolete
    pybabel compile -d helpers/locale -D helpers
"""

from __future__ import annotations

import functools
import gettext
import os
import warnings
from pathlib import Path

DOMAIN = "helpers"
LOCALE_DIR = Path(__file__).resolve().with_name("locale")
#: The course's languages; the first is the one the sources are written in.
LANGUAGES = ("en", "zh")

_chosen: str | None = None


def normalize(lang: str) -> str | None:
    """``"en"`` or ``"zh"`` for a language tag (``zh_CN.UTF-8``, ``zh-Hans``, ``EN``), else None.

    >>> normalize("zh_CN.UTF-8"), normalize(""), normalize("fr")
    ('zh', 'en', None)
    """
    base = lang.strip().replace("-", "_").split(".")[0].split("_")[0].lower()
    if base in ("", "c", "posix"):
        return "en"
    return base if base in LANGUAGES else None


def set_language(lang: str | None) -> None:
    """Fix the language for this process (``None``: follow ``COURSE_LANG`` again).

    >>> set_language("zh")  # the helpers speak Chinese from now on
    """
    global _chosen
    if lang is None:
        _chosen = None
        return
    found = normalize(lang)
    if found is None:
        raise ValueError(f"unknown language {lang!r}: the course speaks {' and '.join(LANGUAGES)}")
    _chosen = found


@functools.cache
def _warn_unknown(value: str) -> None:
    warnings.warn(f"COURSE_LANG={value!r} is not a language of the course "
                  f"({', '.join(LANGUAGES)}); the helpers speak English", stacklevel=4)


def language() -> str:
    """The language the helpers speak now: ``set_language()``'s, else ``COURSE_LANG``'s, else en.

    >>> language()
    'en'
    """
    if _chosen is not None:
        return _chosen
    value = os.environ.get("COURSE_LANG", "")
    found = normalize(value)
    if found is None:
        _warn_unknown(value)
        return "en"
    return found


@functools.cache
def translations(lang: str) -> gettext.NullTranslations:
    """The catalog of ``lang`` (English: no catalog, every message is its own translation).

    >>> translations("zh").gettext("the kernel died")
    '内核崩溃了'
    """
    if lang == LANGUAGES[0]:
        return gettext.NullTranslations()
    # No fallback: a missing .mo is a broken install, not a reason to speak English silently.
    return gettext.translation(DOMAIN, localedir=LOCALE_DIR, languages=[lang])


def _(message: str) -> str:
    """``message`` in the current language.

    >>> _("missing")  # 缺失 with COURSE_LANG=zh
    'missing'
    """
    return translations(language()).gettext(message)


def N_(message: str) -> str:
    """Mark a message for the catalog without translating it yet (a text fixed at import time,
    e.g. a checker's TODO, is translated where it is printed: ``_(todo)``).

    >>> TODO = N_("Write double(x).")
    """
    return message


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of the message for the count ``n``, in the current language.

    >>> ngettext("{count} cell raised", "{count} cells raised", 2).format(count=2)
    '2 cells raised'
    """
    return translations(language()).ngettext(singular, plural, n)
