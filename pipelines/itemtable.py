"""A compact item table side input: ``{item: (category, seller)}`` plus the sorted item universe.

The example builder needs, from the whole log, each item's most frequent category and seller
(the item table) and the sorted list of every item (the negative-sampling universe). Shipped as
a plain dict and a separate sorted list, every worker decodes each item id twice and every
``(category, seller)`` tuple and string once per item: measured at 10^6 items, 22.4 MB + 9.4 MB
encoded and ~263 MB + ~61 MB of Python objects per worker (benchmarks/RESULTS_preprocess.md).

:class:`ItemTable` is a ``dict`` (lookups as fast as before) that

* pickles compactly (:meth:`__reduce__`): the sorted ids, the distinct ``(category, seller)``
  pairs, and one 32-bit pair index per item - Beam's ``FastPrimitivesCoder`` pickles ``dict``
  subclasses, so a side input holding an ``ItemTable`` travels in this form;
* decodes into a dict whose values are shared tuples (one per distinct pair: a few thousand
  sellers, not one tuple and two strings per item) and whose :meth:`universe` is the sorted
  id list built while decoding, sharing the key strings - no second copy of the ids.

Use it as ONE singleton side input (e.g. the output of a ``CombineGlobally``), with
``universe = table.universe()`` instead of a second side input.
"""
from __future__ import annotations

from array import array
from typing import Dict, Iterable, List, Optional, Tuple

Sides = Tuple[str, str]


class ItemTable(dict):
    """``{item_id: (category_id, seller_id)}`` with a compact pickled form and a shared-key
    sorted :meth:`universe`."""

    __slots__ = ("_universe",)

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._universe: Optional[List[str]] = None

    def universe(self) -> List[str]:
        """The sorted item ids (computed once; do not modify the table afterwards)."""
        if self._universe is None or len(self._universe) != len(self):
            self._universe = sorted(self)
        return self._universe

    def __reduce__(self):
        ids = self.universe()
        pair_index: Dict[Sides, int] = {}
        idx = array("I", (pair_index.setdefault(tuple(self[i]), len(pair_index)) for i in ids))
        return (_rebuild, (ids, list(pair_index), idx.tobytes()))

    def __copy__(self):
        return ItemTable(self)


def _rebuild(ids: List[str], pairs: List[Sides], idx_bytes: bytes) -> ItemTable:
    idx = array("I")
    idx.frombytes(idx_bytes)
    shared = [tuple(p) for p in pairs]
    t = ItemTable(zip(ids, (shared[i] for i in idx)))
    t._universe = list(t)  # insertion order = sorted ids, the dict's own key strings
    return t


def compact(table: Dict[str, Sides]) -> ItemTable:
    """An :class:`ItemTable` with the entries of ``table`` (values as tuples)."""
    return table if isinstance(table, ItemTable) else ItemTable(
        (k, tuple(v)) for k, v in table.items())


def from_pairs(pairs: Iterable[Tuple[str, Sides]]) -> ItemTable:
    return ItemTable((k, tuple(v)) for k, v in pairs)
