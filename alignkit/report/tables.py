"""The report layer's one formatter: how a number, an interval, a table, a config or a figure reads in the
book. Every chapter shows its results through a `Chapter`, which numbers tables and figures and gives each a
caption in English and Chinese.

    ch = Chapter(1)
    ch.table(frame, "What the table shows, on which data.", "表的内容与数据。")
    ch.figure(fig, "What the figure shows.", "图的内容。")
    ch.config(cfg.data, "Data settings.", "数据设置。")

Numbers: three significant decimals (0.534, 12.3, 152), percentages with one decimal (53.4%), intervals as
`0.534 [0.460, 0.608]`. Text that carries both languages as 'English / 中文' is shown in the reader's language
in the book (book/_static/lang.js switches `.ak-en` / `.ak-zh` spans with the page's English / 中文 tabs);
Jupyter, which has no switch, shows both.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
TEXT = Path(__file__).resolve().parent / "text"
MISSING = "–"
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


# ----------------------------------------------------------------------------- numbers

def _is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA or x is pd.NaT


def decimals(x: float) -> int | None:
    """Decimals that give about three significant digits (None: scientific notation for tiny values)."""
    a = abs(x)
    if a == 0 or a >= 100:
        return 0
    if a >= 10:
        return 1
    if a >= 1:
        return 2
    if a >= 0.001:
        return 3
    return None


def number(x, *, percent: bool = False, signed: bool = False, places: int | None = None) -> str:
    """0.53395 -> '0.534'; 12.345 -> '12.3'; 152.3 -> '152'; 3 -> '3'; percent: 0.5339 -> '53.4%';
    signed: '+0.255'; None / NaN -> '–'."""
    if _is_missing(x):
        return MISSING
    if isinstance(x, bool):
        return "yes / 是" if x else "no / 否"
    sign = "+" if signed else ""
    if percent:
        return f"{100 * float(x):{sign}.1f}%"
    if isinstance(x, int) or (hasattr(x, "dtype") and getattr(x.dtype, "kind", "") in "iu"):
        return f"{int(x):{sign}d}"
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    d = decimals(x) if places is None else places
    if d is not None and round(x, d) == 0:
        x = 0.0  # not '-0.000'
    return f"{x:{sign}.1e}" if d is None else f"{x:{sign}.{d}f}"


def interval(estimate, ci, *, percent: bool = False, signed: bool = False) -> str:
    """An estimate with its 95% interval, all at the estimate's precision: '0.534 [0.460, 0.608]'."""
    if _is_missing(estimate):
        return MISSING
    if not ci or any(_is_missing(v) for v in ci):
        return number(estimate, percent=percent, signed=signed)
    if percent:
        return f"{number(estimate, percent=True, signed=signed)} [{number(ci[0], percent=True, signed=signed)}, " \
               f"{number(ci[1], percent=True, signed=signed)}]"
    values = [float(estimate), float(ci[0]), float(ci[1])]
    ref = abs(values[0]) if abs(values[0]) >= 0.001 else max(abs(v) for v in values)
    d = decimals(ref) if ref else 0
    if d is None:
        return " ".join([number(values[0], signed=signed),
                         f"[{number(values[1], signed=signed)}, {number(values[2], signed=signed)}]"])
    d = max(d, 1) if ref < 100 else d
    return f"{number(values[0], signed=signed, places=d)} [{number(values[1], signed=signed, places=d)}, " \
           f"{number(values[2], signed=signed, places=d)}]"


# ----------------------------------------------------------------------------- paths

_ABS_PATH = re.compile(r"(?<![\w/:.+=~…-])(/[\w.+@-]+(?:/[\w.+@-]+)+/?)")


def display_path(path) -> str:
    """A path as the reader should see it: relative to the project ('outputs/cpu/rm',
    '../shared/data/align_anything_t2t.json'); a path far outside it keeps only its last two parts
    ('…/pytest-3/tiny-llama0'). Never the build machine's absolute path."""
    text = str(path)
    if not os.path.isabs(text):
        return text
    rel = os.path.relpath(text, REPO)
    if not rel.startswith(os.pardir + os.sep + os.pardir + os.sep) and rel != os.pardir + os.sep + os.pardir:
        return rel
    parts = Path(text).parts
    return "…/" + "/".join(parts[-2:])


def scrub_paths(text: str) -> str:
    """Every absolute path in `text` replaced by `display_path` of it (URLs and data URIs are left alone)."""
    return _ABS_PATH.sub(lambda m: display_path(m.group(1)), text)


# ----------------------------------------------------------------------------- words

def _glossary() -> dict[str, str]:
    table = {}
    path = TEXT / "glossary.tsv"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#") and "\t" in line:
            en, zh = line.split("\t", 1)
            table[en.strip()] = zh.strip()
    return table


GLOSSARY = _glossary()
"""Column and row names (English) -> Chinese, from text/glossary.tsv."""


def split_languages(text: str) -> tuple[str, str | None]:
    """'above chance / 高于随机' -> ('above chance', '高于随机'); a text without a Chinese part -> (text, the
    glossary's translation or None)."""
    text = str(text)
    if " / " in text:
        en, zh = text.rsplit(" / ", 1)
        if _CJK.search(zh) and not _CJK.search(en):
            return en, zh
    return text, GLOSSARY.get(text)


def bilingual_html(en: str, zh: str | None = None, *, escape: bool = True) -> str:
    """HTML that shows `en` or `zh` with the book's language switch ('en / zh' where no switch runs)."""
    if zh is None:
        en, zh = split_languages(en)
    esc = html.escape if escape else (lambda s: s)
    if zh is None or zh == en:
        return esc(en)
    return (f'<span class="ak-en" lang="en">{esc(en)}</span><span class="ak-sep"> / </span>'
            f'<span class="ak-zh" lang="zh">{esc(zh)}</span>')


def cell_text(value, *, percent: bool = False) -> str:
    """One table cell as plain text: numbers rounded, (estimate, [low, high]) as an interval, lists of
    numbers in brackets, paths relative, mappings as `key=value` pairs."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (list, tuple)):
        return interval(value[0], value[1], percent=percent)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float)) or _is_missing(v) for v in value):
            return "[" + ", ".join(number(v, percent=percent) for v in value) + "]"
        return ", ".join(cell_text(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell_text(v)}" for k, v in value.items())
    if isinstance(value, Path):
        return display_path(value)
    if isinstance(value, str):
        return scrub_paths(value)
    if _is_missing(value) or isinstance(value, (int, float, bool)) or hasattr(value, "dtype"):
        return number(value, percent=percent)
    return scrub_paths(str(value))


def tab_set(heading: str, en: str, zh: str) -> str:
    """A MyST page section whose English and Chinese text sit in a tab-set synced with the book's language
    switch (text/tabs.md)."""
    return (TEXT / "tabs.md").read_text(encoding="utf-8").format(heading=heading, en=en.strip(), zh=zh.strip())


# ----------------------------------------------------------------------------- tables

_STYLE = """<style>
.ak-table { overflow-x: auto; margin: 0.6em 0 1.2em; }
.ak-table table { border-collapse: collapse; font-size: 0.88em; }
.ak-table caption { caption-side: top; text-align: left; padding: 0 0 0.4em; color: inherit; }
.ak-table th, .ak-table td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; vertical-align: top; }
.ak-table td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ak-table thead th { border-bottom: 2px solid #888; text-align: left; }
.ak-figure { margin: 0.6em 0 1.4em; }
.ak-figure img { max-width: 100%; height: auto; }
.ak-figure figcaption, .ak-reading { font-size: 0.92em; }
</style>"""


def _caption(label: str, en: str, zh: str) -> str:
    """'Table 1.2|表 1.2' and the two captions -> the bilingual caption markup the language switch toggles."""
    label_en, label_zh = label.split("|")
    return (f'<span class="ak-en" lang="en"><b>{label_en}.</b> {html.escape(en)}</span>'
            f'<span class="ak-sep"> / </span>'
            f'<span class="ak-zh" lang="zh"><b>{label_zh}</b> {html.escape(zh)}</span>')


class Table:
    """A captioned, numbered table: `frame` keeps the raw values; `_repr_html_` is what the book shows."""

    def __init__(self, frame: pd.DataFrame, label: str, en: str, zh: str, *, index: bool = True,
                 percent: Iterable[str] = ()):
        self.frame, self.label, self.en, self.zh, self.index = frame, label, en, zh, index
        self.percent = set(percent)

    def rows(self) -> list[list[str]]:
        """Every cell as display text (index first when shown)."""
        out = []
        for key, row in self.frame.iterrows():
            cells = [cell_text(key)] if self.index else []
            cells += [cell_text(v, percent=c in self.percent) for c, v in row.items()]
            out.append(cells)
        return out

    def header(self) -> list[str]:
        names = [str(self.frame.index.name or "")] if self.index else []
        return names + [str(c) for c in self.frame.columns]

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{bilingual_html(h)}</th>" for h in self.header())
        body = []
        for cells in self.rows():
            tds = []
            for i, text in enumerate(cells):
                numeric = bool(re.fullmatch(r"[−+-]?[\d.,]+(e[+-]?\d+)?%?( \[.*\])?|–", text))
                tag = "th" if self.index and i == 0 else "td"
                tds.append(f'<{tag}{" class=num" if numeric else ""}>{bilingual_html(text)}</{tag}>')
            body.append("<tr>" + "".join(tds) + "</tr>")
        caption = _caption(self.label, self.en, self.zh)
        return (f'{_STYLE}<div class="ak-table"><table><caption>{caption}</caption>'
                f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')

    def __repr__(self) -> str:
        label_en = self.label.split("|")[0]
        shown = pd.DataFrame(self.rows(), columns=self.header() or None)
        return f"{label_en}. {self.en}\n{shown.to_string(index=False)}"


class Figure:
    """A captioned, numbered figure, embedded as PNG in an HTML <figure> (the matplotlib figure is closed, so
    Jupyter does not draw it a second time)."""

    def __init__(self, fig, label: str, en: str, zh: str, *, dpi: int = 110):
        import matplotlib.pyplot as plt
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        self.png, self.label, self.en, self.zh = buffer.getvalue(), label, en, zh

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.png).decode()
        caption = _caption(self.label, self.en, self.zh)
        return (f'{_STYLE}<figure class="ak-figure"><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(self.en)}"><figcaption>{caption}</figcaption></figure>')

    def __repr__(self) -> str:
        return f"{self.label.split('|')[0]}. {self.en}"


class Reading:
    """A sentence in both languages, shown as a paragraph (a reading of the numbers above it)."""

    def __init__(self, en: str, zh: str):
        self.en, self.zh = en, zh

    def _repr_html_(self) -> str:
        return f'<p class="ak-reading">{bilingual_html(self.en, self.zh)}</p>'

    def __repr__(self) -> str:
        return f"{self.en}\n{self.zh}"


def config_frame(obj, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """A dataclass or mapping -> DataFrame(setting, value), one row per field (nested dataclasses and
    dicts flattened with dots); `keys` picks and orders the rows."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)

    def flat(tree, prefix=""):
        for k, v in dict(tree).items():
            if isinstance(v, Mapping):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v
    items = dict(flat(obj))
    if keys is not None:
        items = {k: items.get(k) for k in keys}
    return pd.DataFrame({"value": [_config_value(v) for v in items.values()]},
                        index=pd.Index(list(items), name="setting"))


def _config_value(v):
    if isinstance(v, str) and (os.path.isabs(v) or v.startswith("~")):
        return display_path(v)
    if isinstance(v, float):
        return number(v) if abs(v) >= 1e-3 or v == 0 else f"{v:g}"
    if isinstance(v, (list, tuple)) and not v:
        return MISSING
    return v


class Chapter:
    """Numbers the tables and figures of one chapter ('Table 1.2', 'Figure 1.1') and shows them through
    the formatter. A re-run cell with the same caption keeps its number."""

    def __init__(self, number: int):
        self.number = number
        self._labels: dict[tuple[str, str], str] = {}

    def _label(self, kind: str, en: str) -> str:
        key = (kind, en)
        if key not in self._labels:
            count = sum(k == kind for k, _ in self._labels) + 1
            self._labels[key] = f"{self.number}.{count}"
        n = self._labels[key]
        return f"{'Table' if kind == 'table' else 'Figure'} {n}|{'表' if kind == 'table' else '图'} {n}"

    def table(self, frame: pd.DataFrame, en: str, zh: str, *, index: bool = True,
              percent: Iterable[str] = ()) -> Table:
        """`frame` formatted for reading, with a numbered caption saying what it shows and on which data."""
        return Table(frame, self._label("table", en), en, zh, index=index, percent=percent)

    def config(self, obj, en: str, zh: str, keys: Iterable[str] | None = None) -> Table:
        """A config (dataclass or dict) as a small key/value table; paths relative to the project."""
        return Table(config_frame(obj, keys), self._label("table", en), en, zh)

    def figure(self, fig, en: str, zh: str) -> Figure:
        return Figure(fig, self._label("figure", en), en, zh)

    @staticmethod
    def reading(en: str, zh: str) -> Reading:
        return Reading(en, zh)
