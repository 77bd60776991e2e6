"""Regenerate the Chinese diagrams' font, helpers/fonts/NotoSansSC-course.otf, from a full font.

    python -m tools.font_subset /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

The subset holds GB2312 level 1 (the 3,755 most common hanzi), ASCII, CJK punctuation and every
character of the Chinese catalog (helpers/locale/zh/LC_MESSAGES/helpers.po), so a reworded label
rarely needs a new font; tests/test_diagrams_zh.py names any label character it lacks. Its family
is renamed (``FAMILY``) so that it never shadows a full Noto Sans CJK installed on the machine.
The source font is SIL OFL 1.1 (helpers/fonts/OFL.txt), and so is the subset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "helpers" / "fonts" / "NotoSansSC-course.otf"
PO = ROOT / "helpers" / "locale" / "zh" / "LC_MESSAGES" / "helpers.po"
FAMILY = "Noto Sans SC Course"
#: Full-width and CJK punctuation the Chinese texts use.
PUNCTUATION = "，。、；：？！“”‘’（）《》【】「」…—～·％＋－＝／｜"


def gb2312_level1() -> str:
    """The 3,755 hanzi of GB2312 level 1 (rows 16-55), in code order."""
    chars = []
    for row in range(0xB0, 0xD8):
        for cell in range(0xA1, 0xFF):
            try:
                chars.append(bytes([row, cell]).decode("gb2312"))
            except UnicodeDecodeError:  # row 55 ends at 0xF9
                pass
    return "".join(chars)


def catalog_text(po: Path) -> str:
    """Every translated string of a .po file (what the Chinese helpers can print)."""
    from babel.messages.pofile import read_po

    with open(po, "rb") as file:
        catalog = read_po(file)
    forms = [s for m in catalog if m.id
             for s in (m.string if isinstance(m.string, tuple) else (m.string,)) if s]
    return "".join(forms)


def characters(po: Path, extra: str = "") -> str:
    """The characters the subset keeps, sorted and without control characters."""
    text = "".join(chr(c) for c in range(0x20, 0x7F)) + PUNCTUATION + gb2312_level1()
    text += catalog_text(po) + extra
    return "".join(sorted({c for c in text if c.isprintable()}))


def subset(source: Path, out: Path, text: str) -> int:
    """Write the Simplified Chinese face of ``source`` cut to ``text``; returns the file size."""
    from fontTools import subset as ft_subset
    from fontTools.ttLib import TTCollection, TTFont

    if source.suffix.lower() in (".ttc", ".otc"):
        faces = TTCollection(str(source)).fonts
        sc = [f for f in faces if f["name"].getDebugName(1).endswith(" SC")
              and "Mono" not in f["name"].getDebugName(1)]
        if not sc:
            names = ", ".join(f["name"].getDebugName(1) for f in faces)
            raise SystemExit(f"error: no Simplified Chinese (SC) face in {source} ({names})")
        font = sc[0]
    else:
        font = TTFont(str(source))
    missing = [c for c in text if ord(c) not in font.getBestCmap() and not c.isspace()]
    if missing:
        raise SystemExit(f"error: {source} lacks {''.join(missing)!r}; use Noto Sans CJK / "
                         "Source Han Sans")
    options = ft_subset.Options()
    options.layout_features = []  # horizontal Latin/CJK labels need no shaping features
    options.hinting = False  # rendered at one size into a PNG: hints add bytes, not clarity
    options.drop_tables += ["VORG", "vhea", "vmtx", "BASE", "GPOS", "GSUB"]
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]  # keep copyright and licence records
    cutter = ft_subset.Subsetter(options)
    cutter.populate(text=text)
    cutter.subset(font)
    names = font["name"]
    for record in list(names.names):
        if record.nameID in (16, 17, 21, 22):  # typographic names of the original family
            names.removeNames(nameID=record.nameID)
    version = names.getDebugName(5) or ""
    names.setName(FAMILY, 1, 3, 1, 0x409)
    names.setName("Regular", 2, 3, 1, 0x409)
    names.setName(f"{FAMILY} Regular; {version}", 3, 3, 1, 0x409)
    names.setName(FAMILY, 4, 3, 1, 0x409)
    names.setName(FAMILY.replace(" ", "") + "-Regular", 6, 3, 1, 0x409)
    for record in list(names.names):  # one platform only: no stale Mac/other-language names
        if record.platformID != 3 or record.langID != 0x409:
            names.removeNames(platformID=record.platformID, langID=record.langID)
    if "CFF " in font:
        cff = font["CFF "].cff
        cff.fontNames = [FAMILY.replace(" ", "") + "-Regular"]
        top = cff.topDictIndex[0]
        top.FamilyName = FAMILY
        top.FullName = FAMILY
    out.parent.mkdir(parents=True, exist_ok=True)
    font.recalcTimestamp = False  # the same input gives the same bytes
    font.save(str(out))
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path,
                        help="a full CJK font: NotoSansCJK-Regular.ttc (Debian: fonts-noto-cjk), "
                             "NotoSansCJKsc-Regular.otf or SourceHanSansSC-Regular.otf")
    parser.add_argument("--po", type=Path, default=PO, help="the Chinese catalog (default: %(default)s)")
    parser.add_argument("--text", type=Path, action="append", default=[],
                        help="a UTF-8 file whose characters are kept too (repeatable)")
    parser.add_argument("-o", "--out", type=Path, default=OUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"no font file {args.source}: install fonts-noto-cjk or download "
                     "Noto Sans CJK SC (OFL) and pass its path")
    extra = "".join(p.read_text(encoding="utf-8") for p in args.text)
    text = characters(args.po, extra)
    size = subset(args.source, args.out, text)
    print(f"{args.out}: {len(text)} characters, {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
