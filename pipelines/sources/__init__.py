"""Log sources: registry and count verification.

``get_source(name, input, mapping=None, **kw)`` builds a source by name:

=================  ====================================================================
``synthetic``      output of ``python -m pipelines.synthetic`` (file, directory or glob)
``generic``        any CSV / Parquet / JSON-lines log + ``mapping`` (docs/mapping.md)
``mind``           MIND ``behaviors.tsv`` + ``news.tsv`` directory
``amazon_beauty``  Amazon Beauty 5-core (S3Rec + TimeWeaver files) directory
=================  ====================================================================

Every source exposes what :func:`pipelines.canonical.canonicalize` and the preprocessing job
need as attributes: ``timestamp_format``, ``label_values``, ``positives_only``,
``timestamp_range``, ``split``, ``user_profile`` (and ``canonical_kwargs()`` bundling the first
four).
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, Iterable, Optional, Tuple, Union

from pipelines.sources.base import DeadLetter, RawRow, Source

#: name -> ("module:Class", whether it takes a mapping). A new source is its own module (a
#: :class:`pipelines.sources.base.Source`) plus one line here.
REGISTRY: Dict[str, Tuple[str, bool]] = {
    "synthetic": ("pipelines.sources.synthetic:SyntheticSource", False),
    "generic": ("pipelines.sources.generic:GenericSource", True),
    "mind": ("pipelines.sources.mind:MindSource", False),
    "amazon_beauty": ("pipelines.sources.amazon_beauty:AmazonBeautySource", False),
}
SOURCES = tuple(REGISTRY)


def get_source(name: str, input, mapping: Optional[Any] = None, **kw) -> Source:
    """Build the source ``name`` reading ``input`` (its module is imported now: sources are
    optional for library users). ``mapping`` (a JSON file or dict) is required by the sources
    that take one (``generic``) and rejected by the others."""
    if name not in REGISTRY:
        raise ValueError(f"unknown source {name!r} (known: {', '.join(SOURCES)})")
    target, takes_mapping = REGISTRY[name]
    if takes_mapping and mapping is None:
        raise ValueError(f"source {name!r} needs --mapping=FILE.json (see docs/mapping.md)")
    if not takes_mapping and mapping is not None:
        raise ValueError(f"source {name!r} has a fixed schema and takes no mapping; use "
                         "source 'generic' with a mapping for other logs")
    module, cls = target.split(":")
    source_class = getattr(importlib.import_module(module), cls)
    return source_class(input, mapping, **kw) if takes_mapping else source_class(input, **kw)


def summarize(rows: Iterable[Union[RawRow, DeadLetter]]) -> Dict[str, int]:
    """Counts over raw rows (no coercion): pages, users, items, exposures (non-history rows),
    clicks (``clicked`` in 1/"1" on exposures), interactions (= exposures), history rows,
    dead letters."""
    pages, users, items = set(), set(), set()
    n = dict(exposures=0, clicks=0, history=0, dead_letters=0)
    for r in rows:
        if isinstance(r, DeadLetter):
            n["dead_letters"] += 1
            continue
        users.add(r["user_id"])
        if str(r.get("is_history") or 0) == "1":
            n["history"] += 1
            continue
        pages.add(r["page_id"])
        items.add(r["item_id"])
        n["exposures"] += 1
        n["clicks"] += str(r.get("clicked")) == "1"
    return dict(pages=len(pages), users=len(users), items=len(items),
                interactions=n["exposures"], **n)


def verify_counts(source: Source, rows: Optional[Iterable] = None) -> Dict[str, tuple]:
    """Compare :func:`summarize` of ``source.read()`` (or of ``rows`` already read from it)
    with ``source.EXPECTED_COUNTS`` (the SOURCE.md numbers). Returns
    {key: (expected, got)} for every mismatch ({} = all match)."""
    got = summarize(source.read() if rows is None else rows)
    want = getattr(source, "EXPECTED_COUNTS", {})
    return {k: (v, got.get(k)) for k, v in want.items() if got.get(k) != v}
