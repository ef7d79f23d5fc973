"""Rule-based sentence splitting that returns character spans.

Regex rules rather than a trained splitter: they need no downloaded data, keep exact offsets
and hold up on lower-cased text (CNN/DailyMail), where case-driven splitters stumble.
"""

from __future__ import annotations

import re

# Words after which a period never ends a sentence: titles and honorifics come before a name.
_NEVER_FINAL = frozenset(
    """mr mrs ms dr prof sr jr st sec gen gov sen rep lt col sgt capt cmdr adm maj rev hon pres
    supt insp det cpl pvt fr messrs mme mlle vs cf al approx ca dept univ assn bros""".split()
)
# Abbreviations that introduce a number ("No. 5", "Fig. 2"); elsewhere they are plain words.
_BEFORE_NUMBER = frozenset("""no nos vol vols fig figs pp p art op ch sec secs eq eqs ref refs""".split())
# Abbreviations that may end a sentence: split after them only when the next word is capitalised.
_MAYBE_FINAL = frozenset(
    """inc ltd co corp plc llc etc jan feb mar apr jun jul aug sep sept oct nov dec mon tue
    tues wed thu thur thurs fri sat sun a.m p.m u.s u.k u.n e.u d.c u.s.a e.g i.e ft mt ave
    blvd rd hwy est ph.d m.d b.a m.a""".split()
)

# A candidate boundary: terminal punctuation, optional closing quotes/brackets, then space.
_BOUNDARY = re.compile(r"""[.!?…]+["'”’»)\]]*(?=\s+)""")
# Chinese and Japanese full stops, with any closing quote or bracket: a boundary with or
# without a following space (CJK text has none).
_CJK_BOUNDARY = re.compile(r"""[。！？]+[」』”’）】〉》"']*""")
# "am 3. März": a day number with a period before a month is not a sentence end (German and
# French months only; English does not write dates so, and "May" starts English sentences).
_MONTHS = frozenset(
    """januar jänner februar märz april mai juni juli august september oktober november dezember
    janvier février mars avril juin juillet août septembre octobre novembre décembre""".split()
)
_NEXT_WORD = re.compile(r"""\s+([^\W\d_]+)""")
_WORD_BEFORE = re.compile(r"""([\w.'’-]+)$""")
_NEXT_START = re.compile(r"""\s+(["'“‘«(\[]*)(\S)""")


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` into sentences; return their ``(start, end)`` spans in ``text``.

    Spans are stripped of surrounding whitespace, never empty, in order, and together cover
    every non-space character of the range.
    """
    end = len(text) if end is None else end
    region = text[start:end]
    lowercase_text = not any(ch.isupper() for ch in region)
    spans: list[tuple[int, int]] = []
    sent_start = 0
    cuts = sorted(
        [(m.end(), m.start(), False) for m in _BOUNDARY.finditer(region)]
        + [(m.end(), m.start(), True) for m in _CJK_BOUNDARY.finditer(region)]
    )
    for cut, punct_at, cjk in cuts:
        if cut <= sent_start or not (cjk or _is_boundary(region, punct_at, cut, lowercase_text)):
            continue
        _append(spans, region, sent_start, cut, start)
        sent_start = cut
    _append(spans, region, sent_start, len(region), start)
    return spans


def _append(spans: list[tuple[int, int]], region: str, a: int, b: int, offset: int) -> None:
    piece = region[a:b]
    stripped = piece.strip()
    if not stripped:
        return
    lead = len(piece) - len(piece.lstrip())
    spans.append((offset + a + lead, offset + a + lead + len(stripped)))


def _is_boundary(region: str, punct_at: int, cut: int, lowercase_text: bool) -> bool:
    """Decide whether the punctuation starting at ``punct_at`` ends a sentence."""
    nxt = _NEXT_START.match(region, cut)
    if nxt is None:
        return False
    first = nxt.group(2)
    punct = region[punct_at]
    opens_quote = bool(nxt.group(1))
    if punct in "!?":
        # "Really?" she asked. -- a question inside a quote followed by a lower-case verb.
        return not (first.islower() and not lowercase_text and region[cut - 1] in "\"'”’")
    if region[punct_at : punct_at + 3] == "..." or punct == "…":
        # An ellipsis ends a sentence only when a new one visibly starts.
        return first.isupper() or opens_quote
    word_match = _WORD_BEFORE.search(region, 0, punct_at)
    word = word_match.group(1) if word_match else ""
    bare = word.lower().strip("'’").rstrip(".")
    if bare in _NEVER_FINAL:
        return False
    if bare in _BEFORE_NUMBER and first.isdigit():
        return False
    if bare.isdigit() and len(bare) <= 2:
        after = _NEXT_WORD.match(region, cut)
        if after and after.group(1).lower() in _MONTHS:
            return False
    if len(bare) == 1 and bare.isalpha():
        # An initial ("J. K. Rowling", "Harry S. Truman"): a new sentence rarely follows one.
        return False
    if bare in _MAYBE_FINAL or re.fullmatch(r"(?:[a-z]\.)+[a-z]", bare):
        return first.isupper() and not lowercase_text
    if first.isdigit() or first.isupper() or opens_quote:
        return True
    if lowercase_text:
        # Text with no capitals at all (lower-cased corpora): any period + space is a boundary.
        return first.isalpha()
    # A lower-case word after a period in mixed-case text is usually an abbreviation we do not
    # know ("approx. five"), so keep going.
    return False
