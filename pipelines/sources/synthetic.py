"""``synthetic`` source: the output of ``python -m pipelines.synthetic`` (CSV, JSON-lines or
Parquet), i.e. the generic source with the identity mapping.

The identity mapping is built from the first file's columns: every canonical column maps to
itself and every ``user_<p>`` column becomes profile field ``p``. Timestamps are unix seconds.
"""
from __future__ import annotations

from typing import Sequence, Union

from pipelines.sources.generic import (EXTENSIONS, GenericSource, MappingError, file_columns,
                                       identity_mapping, infer_format, resolve_files)


class SyntheticSource(GenericSource):
    name = "synthetic"

    def __init__(self, input: Union[str, Sequence[str]]):
        files = resolve_files(input, tuple(EXTENSIONS))
        first = files[0]
        cols = file_columns(first, infer_format(first))
        if not cols:
            raise MappingError(f"synthetic input {first} is empty or has no header")
        super().__init__(files, identity_mapping(cols, timestamp_format="unix"))
