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

from typing import Any, Dict, Iterable, Optional, Union

from pipelines.sources.base import DeadLetter, RawRow, Source

SOURCES = ("synthetic", "generic", "mind", "amazon_beauty")


def get_source(name: str, input, mapping: Optional[Any] = None, **kw) -> Source:
    """Build the source ``name`` reading ``input``. ``mapping`` (a JSON file or dict) is
    required by ``generic`` and rejected by the others."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r} (known: {', '.join(SOURCES)})")
    if name == "generic":
        if mapping is None:
            raise ValueError("source 'generic' needs --mapping=FILE.json (see docs/mapping.md)")
        from pipelines.sources.generic import GenericSource
        return GenericSource(input, mapping, **kw)
    if mapping is not None:
        raise ValueError(f"source {name!r} has a fixed schema and takes no mapping; use "
                         "source 'generic' with a mapping for other logs")
    if name == "synthetic":
        from pipelines.sources.synthetic import SyntheticSource
        return SyntheticSource(input, **kw)
    if name == "mind":
        from pipelines.sources.mind import MindSource
        return MindSource(input, **kw)
    from pipelines.sources.amazon_beauty import AmazonBeautySource
    return AmazonBeautySource(input, **kw)


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
