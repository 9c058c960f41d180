"""Property test of the whole preprocessing job on corrupted logs (issue 12 section 6).

A valid small log, written as CSV, JSON-lines or Parquet, is corrupted at random (truncated
lines, random bytes, stray quotes and delimiters, a BOM, CRLF and blank lines, a huge field,
duplicated lines, missing and extra columns; Parquet: random values, nulls, duplicated and
dropped rows, an extra column, a truncated file). For every variant the job must not crash, every
row must be accounted for (rows_read == rows_used + rows_dead_letter), every dead letter must have
a reason and an origin, and the users that no corruption touched must get exactly the examples of
the clean log.

The clean log is built so that a user's examples depend on that user's rows only: every row
carries its own category and seller (the item table is never consulted), there are no triggers,
no sampled negatives, and pages are small enough for the context cap. The split of a page may move
(the time cutoffs depend on every page), so examples are compared across the three splits.
"Touched" users are found conservatively: the user of every line a corruption changed, and every
user or page number (4-digit ids in disjoint ranges) that appears anywhere in a changed line.

A Beam job costs seconds of graph construction whatever its input, so one job reads several
variants at once: every variant is its own file in its own "slot", a copy of the clean log whose
users (U1000+50*slot ...) and pages (P5000+100*slot ...) are renumbered into disjoint ranges, so
the variants cannot touch each other's users (a number in a changed line is mapped to its user
in any slot). One clean job over every slot gives the reference. Each Hypothesis example is one
job of two variants per format; a deterministic variant per format applies every corruption
class at once (plus a truncated Parquet file).
"""
from __future__ import annotations

import collections
import json
import random
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import preprocess as P
from pipelines.sources import get_source
from tests.test_preprocess_util import decode, dead_letters, split_records

COLS = ["page", "user", "item", "click", "ts", "cat", "seller"]
MAPPING = {"columns": {"page_id": "page", "user_id": "user", "item_id": "item",
                       "clicked": "click", "timestamp": "ts", "category_id": "cat",
                       "seller_id": "seller"}}
USERS = range(1000, 1014)


def clean_rows():
    rng = random.Random(7)
    rows, page = [], 5000
    for u in USERS:
        for _ in range(rng.randint(1, 3)):
            page += 1
            for item in rng.sample(range(7000, 7030), rng.randint(2, 4)):
                rows.append({"page": f"P{page}", "user": f"U{u}", "item": f"I{item}",
                             "click": str(int(rng.random() < 0.4)),
                             "ts": str(1_700_000_000 + 100 * page),
                             "cat": f"C{item % 5}", "seller": f"S{item % 3}"})
    rng.shuffle(rows)
    return rows


ROWS = clean_rows()

FMTS = ("csv", "jsonl", "parquet")
DRAWN_PER_FMT = 2  # Hypothesis variants per format in one job
# slot -> format: the deterministic variants (every corruption class; a truncated Parquet file),
# then the Hypothesis variants
SLOT_FMT = list(FMTS) + ["parquet"] + [f for f in FMTS for _ in range(DRAWN_PER_FMT)]
# users 1000+50*slot.. stay below 1700 (the timestamps' first 4 digits), pages below 7000 (items)
assert len(SLOT_FMT) <= 14 and len(ROWS) < 100


def slot_rows(slot):
    """The clean log renumbered into the slot's user and page ranges."""
    return [dict(r, user=f"U{int(r['user'][1:]) + 50 * slot}",
                 page=f"P{int(r['page'][1:]) + 100 * slot}",
                 ts=str(int(r["ts"]) + 100 * 100 * slot)) for r in ROWS]


def slot_users(slot):
    return {u + 50 * slot for u in USERS}


ALL_USERS = {u: s for s in range(len(SLOT_FMT)) for u in slot_users(s)}  # user -> slot
PAGE_USER = {int(r["page"][1:]): int(r["user"][1:])
             for s in range(len(SLOT_FMT)) for r in slot_rows(s)}


def numbers_in(text) -> set:
    """Users referenced by a line: 4-digit windows in a user range, or in a page range
    (mapped to the page's user), of any slot."""
    out = set()
    s = text if isinstance(text, str) else text.decode("latin-1")
    for m in re.finditer(r"(?=(\d{4}))", s):
        n = int(m.group(1))
        if n in ALL_USERS:
            out.add(n)
        elif n in PAGE_USER:
            out.add(PAGE_USER[n])
    return out


# ---------------------------------------------------------------------------------------------
# Corruptions of line files
# ---------------------------------------------------------------------------------------------
def text_line(row, fmt) -> bytes:
    if fmt == "csv":
        return ",".join(row[c] for c in COLS).encode()
    return json.dumps(row).encode()


OPS = ("truncate", "random_bytes", "stray_quote", "stray_delimiter", "duplicate", "blank",
       "huge_field", "drop_column", "extra_column")


def corrupt_lines(fmt, ops, bom, crlf, slot=0):
    """-> (file bytes, users touched). ``ops``: [(op, line index, position seed, bytes)]."""
    lines = [[text_line(r, fmt), int(r["user"][1:]), False]  # [bytes, user, changed]
             for r in slot_rows(slot)]
    for op, i, pos, junk in ops:
        i %= len(lines)
        line, user, _ = lines[i]
        p = pos % (len(line) + 1)
        if op == "truncate":
            new = line[:p]
        elif op == "random_bytes":
            new = line[:p] + junk + line[p + len(junk):]
        elif op == "stray_quote":
            new = line[:p] + b'"' + line[p:]
        elif op == "stray_delimiter":
            new = line[:p] + b"," + line[p:]
        elif op == "duplicate":
            lines.insert(i, [line, user, True])
            lines[i + 1][2] = True
            continue
        elif op == "blank":
            lines.insert(i, [b"   ", None, False])
            continue
        elif op == "huge_field":
            new = line[:p] + b"x" * 1_100_000 + line[p:]
        elif op == "drop_column":
            if fmt == "csv":
                parts = line.split(b",")
                del parts[pos % len(parts)]
                new = b",".join(parts)
            else:
                try:
                    d = json.loads(line)
                    d.pop(sorted(d)[pos % len(d)], None)
                    new = json.dumps(d).encode()
                except (ValueError, AttributeError, TypeError, ZeroDivisionError):
                    new = line[:p]
        else:  # extra_column
            if fmt == "csv":
                new = line + b",extra"
            else:
                try:
                    d = json.loads(line)
                    d["extra"] = "x"
                    new = json.dumps(d).encode()
                except (ValueError, TypeError):
                    new = line + b',"extra": 1'
        lines[i] = [new, user, True]
    touched = set()
    for line, user, changed in lines:
        if changed:
            touched.add(user)
            touched |= numbers_in(line[:200_000])
    nl = b"\r\n" if crlf else b"\n"
    body = nl.join(l for l, _, _ in lines) + nl
    if fmt == "csv":
        body = ",".join(COLS).encode() + nl + body
    if bom:
        body = b"\xef\xbb\xbf" + body
    return body, touched


def corrupt_parquet(path, ops, truncate_file, slot=0):
    rows = slot_rows(slot)
    users = [int(r["user"][1:]) for r in rows]
    touched = set()
    extra = False
    for op, i, pos, junk in ops:
        i %= len(rows)
        col = COLS[pos % len(COLS)]
        if op in ("truncate", "random_bytes", "stray_quote", "stray_delimiter", "huge_field"):
            touched.add(users[i])
            val = junk.decode("utf-8", "replace") if op == "random_bytes" else (
                rows[i][col][:pos % 4] if op == "truncate" else
                rows[i][col] + ('"' if op == "stray_quote" else "," if op ==
                                "stray_delimiter" else "x" * 5000))
            rows[i][col] = val
            touched |= numbers_in(val)
        elif op == "drop_column":
            touched.add(users[i])
            rows[i][col] = None
        elif op == "duplicate":
            rows.insert(i, dict(rows[i]))
            users.insert(i, users[i])
            touched.add(users[i])
        elif op == "blank":  # a dropped row
            touched.add(users[i])
            del rows[i], users[i]
        else:
            extra = True
    df = pd.DataFrame(rows, columns=COLS)
    if extra:
        df["extra"] = "x"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=8)
    if truncate_file:
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) * 2 // 3])
        touched |= slot_users(slot)
    return touched


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------
def run_job(paths, out):
    src = get_source("generic", [str(p) for p in paths], mapping=MAPPING)
    cfg = P.PreprocessConfig(output_dir=str(out), num_shards=1, valid_fraction=0.2,
                             test_fraction=0.2, max_context=20, shuffle_buckets=0)
    st_ = P.run(src, cfg, ["--runner=DirectRunner"])
    by_user = collections.defaultdict(collections.Counter)
    for split in ("train", "valid", "test"):
        for rec in split_records(str(out), split):
            by_user[int(decode(rec)["user_id"][0][1:]) if decode(rec)["user_id"][0][1:].isdigit()
                    else -1][rec] += 1
    return st_, by_user


def write_variant(d, slot, ops, bom, crlf, truncate_file):
    """Slot ``slot``'s log in its format, corrupted; -> (path, users touched)."""
    fmt = SLOT_FMT[slot]
    path = d / f"log{slot}.{fmt}"
    if fmt == "parquet":
        touched = corrupt_parquet(str(path), ops, truncate_file, slot)
    else:
        data, touched = corrupt_lines(fmt, ops, bom, crlf, slot)
        path.write_bytes(data)
    return path, touched


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """user -> examples of the clean log (every slot, each in its format, in one job)."""
    d = tmp_path_factory.mktemp("clean")
    paths = [write_variant(d, s, [], False, False, False)[0] for s in range(len(SLOT_FMT))]
    st_, by_user = run_job(paths, d / "out")
    assert st_["rows_dead_letter"] == 0 and st_["rows_read"] == len(ROWS) * len(SLOT_FMT)
    assert set(by_user) == set(ALL_USERS)
    return by_user


def check_job(d, variants, clean):
    """Write ``variants`` ({slot: (ops, bom, crlf, truncate_file)}), run one job over them and
    check it; -> {slot: users checked against the clean log}."""
    paths, touched = [], set()
    for slot, v in variants.items():
        path, t = write_variant(d, slot, *v)
        paths.append(str(path))
        touched |= t
    st_, by_user = run_job(paths, d / "out")
    assert st_["rows_read"] == st_["rows_used"] + st_["rows_dead_letter"]
    assert st_["rows_dead_letter"] == sum(st_["dead_letter_reasons"].values())
    dls = dead_letters(str(d / "out"))
    assert len(dls) == st_["rows_dead_letter"]
    for dl in dls:
        assert dl["reason"], dl
        assert any(dl["origin"].startswith(p + ":") and p in dl["detail"] for p in paths), dl
    checked = {}
    for slot in variants:
        checked[slot] = slot_users(slot) - touched
        for u in sorted(checked[slot]):
            assert by_user.get(u) == clean[u], (slot, u, sorted(touched))
    return checked


# every corruption class at once, at lines of different users (position seeds varied)
EVERY_CLASS = [(op, 11 * k + 3, 37 * k + 5, b"\xff\x00\",\n")
               for k, op in enumerate(OPS)]


def test_every_corruption_class_in_every_format(tmp_path_factory, clean):
    """Deterministic: each format's log with every corruption class (line files: with a BOM
    and CRLF line ends), and a truncated Parquet file."""
    d = tmp_path_factory.mktemp("every")
    variants = {0: (EVERY_CLASS, True, True, False), 1: (EVERY_CLASS, True, False, False),
                2: (EVERY_CLASS, False, False, False), 3: (EVERY_CLASS[:2], False, False, True)}
    checked = check_job(d, variants, clean)
    for slot in (0, 1, 2):  # the comparison with the clean log did check someone
        assert checked[slot], slot
    assert not checked[3]  # the truncated file touches all of its users


op_strategy = st.tuples(st.sampled_from(OPS), st.integers(0, 10_000), st.integers(0, 10_000),
                        st.binary(min_size=1, max_size=6))
variant_strategy = st.tuples(st.lists(op_strategy, min_size=1, max_size=6), st.booleans(),
                             st.booleans(), st.integers(0, 9).map(lambda n: n == 0))


@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drawn=st.fixed_dictionaries({
    fmt: st.lists(variant_strategy, min_size=DRAWN_PER_FMT, max_size=DRAWN_PER_FMT)
    for fmt in FMTS}))
def test_corrupted_logs_never_crash_and_lose_nothing(tmp_path_factory, clean, drawn):
    """Each example: one job over ``DRAWN_PER_FMT`` random variants of each format (CSV,
    JSON-lines, Parquet); ``(ops, bom, crlf, truncate_file)``, the last for Parquet only."""
    d = tmp_path_factory.mktemp("fuzz")
    slots = {fmt: [s for s in range(4, len(SLOT_FMT)) if SLOT_FMT[s] == fmt] for fmt in FMTS}
    check_job(d, {s: v for fmt in FMTS for s, v in zip(slots[fmt], drawn[fmt])}, clean)
