"""Sphinx configuration shared by both editions of the course website (`make site`).

tools/site.py stages each edition's sources (the committed notebooks, README as the index page)
under build/site-src/<edition>/ and runs Sphinx with this folder as the configuration directory
and COURSE_SITE_EDITION set to ``en`` or ``zh``. Nothing is executed and nothing is fetched: the
notebooks' stored outputs are shown, and every file a page needs is part of the site.
"""

from __future__ import annotations

import json
import os

EDITION = os.environ.get("COURSE_SITE_EDITION", "en")
# Facts the templates need, written by tools/site.py next to the staged sources.
CONTEXT = json.loads(os.environ.get("COURSE_SITE_CONTEXT", "{}"))
ZH = EDITION == "zh"

project = "PyTorch 模型工程" if ZH else "PyTorch model engineering"
author = "PyTorch model engineering course"
language = "zh_CN" if ZH else "en"
html_title = project

extensions = ["myst_nb"]
# The committed outputs are the ones shown: notebooks are never re-run for the site.
nb_execution_mode = "off"
# No widget JavaScript from a CDN: tools/site.py replaces widget outputs with a note instead.
nb_ipywidgets_js: dict = {}
nb_output_stderr = "show"
myst_enable_extensions = ["colon_fence", "html_image"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # chapters number their own headings (## 1. ..., ### 1.1 ...)

exclude_patterns = ["_extra", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["course.css"]
# The notebooks themselves, offered for download next to their pages (en/notebooks/03_....ipynb).
html_extra_path = [CONTEXT["extra_path"]] if CONTEXT.get("extra_path") else []
html_theme = "furo"
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {"top_of_page_buttons": []}
html_sidebars = {"**": [
    "sidebar/brand.html", "sidebar/lang-switch.html", "sidebar/search.html",
    "sidebar/scroll-start.html", "sidebar/navigation.html", "sidebar/scroll-end.html",
    "sidebar/variant-selector.html",
]}
html_context = {
    "course_other": "en" if ZH else "zh",
    "course_other_label": "English" if ZH else "中文",
    "course_other_title": "Read this page in English" if ZH else "阅读本页的中文版",
    "course_download_label": "下载本章笔记本 (.ipynb)" if ZH else "Download this notebook (.ipynb)",
    "course_chapters": CONTEXT.get("chapters", []),
}


def _fix_chinese_search_stemmer() -> None:
    """Sphinx 9.0's Chinese search ships the English stemmer but its language_data.js ends with
    ``window.Stemmer = ChineseStemmer``, a class that does not exist, so the zh search page finds
    nothing (sphinx-doc/sphinx#14229, fixed upstream by #14416). Name the class it ships."""
    import sphinx
    from sphinx import search
    from sphinx.search.zh import SearchChinese

    if not (9, 0) <= sphinx.version_info[:2] < (9, 1):
        return
    minified = search._MINIFIED_JS_PATH

    class CourseSearchChinese(SearchChinese):
        js_stemmer_rawcode = None
        js_stemmer_code = "\n".join((
            (minified / "base-stemmer.js").read_text(encoding="utf-8"),
            (minified / SearchChinese.js_stemmer_rawcode).read_text(encoding="utf-8"),
            "window.Stemmer = EnglishStemmer;",
        ))

    search.languages["zh"] = CourseSearchChinese


_fix_chinese_search_stemmer()


def _chinese_search_words() -> dict[str, str]:
    """jieba (Sphinx's Chinese word splitter) learns the course's own terms from the glossary, so
    a search for 断点续训 or 分片检查点 finds the pages that use them, not only their parts."""
    import csv
    import tempfile
    from pathlib import Path

    glossary = Path(__file__).resolve().parents[1] / "translations" / "zh" / "glossary.tsv"
    lines = [line for line in glossary.read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    terms = sorted({row["chinese"] for row in csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
                    if any("\u4e00" <= c <= "\u9fff" for c in row["chinese"])})
    words = Path(tempfile.gettempdir()) / "course-site-jieba-words.txt"
    words.write_text("".join(f"{term} 100000 n\n" for term in terms), encoding="utf-8")
    return {"dict": str(words)}


if ZH:
    html_search_options = _chinese_search_words()
