"""Vocabulary files ``OUT/vocab/<name>.txt``: one raw id per line, most frequent first (ties by
id), ids seen fewer than ``min_freq`` times in the training split left out (they map to OOV
in-graph). Written through Beam's FileSystems so gs:// and hdfs:// work."""
from __future__ import annotations

import logging
from typing import Iterable, List, Optional, Tuple


def vocab_lines(counts: Iterable[Tuple[str, int]], min_freq: int) -> List[str]:
    """Ids with count >= min_freq, sorted by (-count, id). Empty ids are never listed."""
    kept = [(c, i) for i, c in counts if i and c >= min_freq]
    kept.sort(key=lambda t: (-t[0], t[1]))
    for _, i in kept:
        if "\n" in i or "\r" in i:
            raise ValueError(f"vocabulary id {i!r} contains a newline: cannot be written one per line")
    return [i for _, i in kept]


def write_lines(path: str, lines: List[str]) -> None:
    """Write one id per line. An empty vocabulary (an optional field the log lacks, e.g. no
    seller column) is written as an empty file and logged: the trainer gives the features that
    read it one OOV bucket (``ctrcore.layers.IdLookup``)."""
    from apache_beam.io.filesystems import FileSystems

    if not lines:
        logging.warning("vocabulary %s is empty (no id in the training split: the log lacks "
                        "this optional field?); its features get one OOV bucket in the model",
                        path)
    fh = FileSystems.create(path)
    try:
        fh.write("".join(line + "\n" for line in lines).encode("utf-8"))
    finally:
        fh.close()


def write_text(path: str, text: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    fh = FileSystems.create(path)
    try:
        fh.write(text.encode("utf-8"))
    finally:
        fh.close()
