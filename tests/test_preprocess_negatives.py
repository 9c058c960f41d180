"""Positives-only sources: pages per (user, timestamp), seeded negative sampling."""
from __future__ import annotations

import collections

from tests.test_preprocess import run_job
from tests.test_preprocess_util import MemSource, examples, split_records


def reviews():
    rows = []
    for u in range(8):
        for k in range(5):
            it = (u * 3 + k * 7) % 40
            rows.append(dict(user_id=f"u{u}", item_id=f"i{it}", timestamp=str(100 * k + u),
                             category_id=f"c{it % 4}", seller_id=f"s{it % 6}"))
        rows.append(dict(user_id=f"u{u}", item_id=f"i{(u + 1) % 40}", timestamp=str(100 * 4 + u)))
    for it in range(40):  # every item appears in the log
        rows.append(dict(user_id="ux", item_id=f"i{it}", timestamp="7",
                         category_id=f"c{it % 4}", seller_id=f"s{it % 6}"))
    return rows


def test_positives_only_negatives(tmp_path):
    rows = reviews()
    src = MemSource({"r.jsonl": rows}, positives_only=True, split="leave_last_out")
    out = str(tmp_path / "a")
    st = run_job(src, out, negatives_per_positive=2, seed=3)
    interacted = collections.defaultdict(set)
    for r in rows:
        interacted[r["user_id"]].add(r["item_id"])
    exs = [e for s in ("train", "valid", "test") for e in examples(out, s)]
    pos = [e for e in exs if e["label"] == [1]]
    neg = [e for e in exs if e["label"] == [0]]
    assert len(pos) == len(rows) and st["negatives_sampled"] == len(neg) == 2 * len(rows) - 2 * 40
    assert st["rows_read"] == len(rows) == st["rows_used"]
    for e in neg:
        assert e["item_id"][0] not in interacted[e["user_id"][0]]
        it = int(e["item_id"][0][1:])  # sampled item's side features from the item table
        assert e["category_id"] == [f"c{it % 4}"] and e["seller_id"] == [f"s{it % 6}"]
    # each (user, timestamp) is a page; the last one of u0 has 2 positives -> 4 negatives
    page = [e for e in exs if e["page_id"] == ["u0@400"]]
    assert len(page) == 6 and page[0]["page_num_clicked"] == [2]
    assert page[0]["page_num_unclicked"] == [4] and len({e["item_id"][0] for e in page}) == 6
    # ux interacted with every item: no negatives possible
    assert all(e["label"] == [1] for e in exs if e["user_id"] == ["ux"])
    assert st["pages"]["test"] == 8 and st["pages"]["valid"] == 8  # ux: 1 page, all train
    # seeded: another seed -> other negatives (same seed -> same output:
    # test_preprocess.py::test_cli_multiprocessing and test_sample_negatives_excludes_and_is_seeded)
    out3 = str(tmp_path / "c")
    run_job(src, out3, negatives_per_positive=2, seed=4)
    recs = lambda o: sorted(r for s in ("train", "valid", "test") for r in split_records(o, s))
    assert recs(out) != recs(out3) and len(recs(out)) == len(recs(out3))
