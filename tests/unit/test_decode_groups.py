"""How listing rows are grouped into decode tasks as the listing streams by
(earmark.batch.listing.Grouper)."""

from __future__ import annotations

from earmark.batch.listing import DECODE_TASK_BYTES, Grouper

MB = 1 << 20


def decode_groups(rows, max_files):
    """(start, count) of the groups a Grouper makes of `rows`, fed one at a time."""
    g = Grouper(max_files)
    out = [grp for r in rows for grp in g.add(r)] + list(g.flush())
    starts, at = [], 0
    for grp in out:
        starts.append((at, len(grp)))
        at += len(grp)
    return starts


def rows(*sizes):
    return [{"audio_id": str(i), "size_bytes": s} for i, s in enumerate(sizes)]


def covers(groups, n):
    """Groups are consecutive, non-empty and cover every row exactly once."""
    starts = [s for s, _ in groups]
    return (
        all(c > 0 for _, c in groups)
        and starts == sorted(starts)
        and sum(c for _, c in groups) == n
        and all(s + c == t for (s, c), (t, _) in zip(groups, groups[1:], strict=False))
    )


def test_small_files_share_a_task_up_to_max_files():
    g = decode_groups(rows(*[100_000] * 20), max_files=8)
    assert g == [(0, 8), (8, 8), (16, 4)] and covers(g, 20)


def test_large_files_get_tasks_of_their_own():
    big = DECODE_TASK_BYTES + 1
    g = decode_groups(rows(1 * MB, big, 1 * MB, 2 * MB, big, big), max_files=8)
    assert g == [(0, 1), (1, 1), (2, 2), (4, 1), (5, 1)] and covers(g, 6)


def test_group_bytes_stay_under_the_limit():
    sizes = [3 * MB] * 9
    g = decode_groups(rows(*sizes), max_files=16)
    assert all(sum(sizes[s : s + c]) <= DECODE_TASK_BYTES for s, c in g) and covers(g, 9)


def test_unknown_sizes_and_edge_cases():
    assert decode_groups([], max_files=8) == []
    assert decode_groups(rows(None, None, None), max_files=2) == [(0, 2), (2, 1)]
    assert decode_groups(rows(5), max_files=1) == [(0, 1)]


def test_rows_of_one_packed_row_group_share_a_task_whatever_their_number():
    def member(row, group):
        return {"audio_id": str(row), "packed": {"kind": "parquet", "uri": "s", "row_group": group}}

    packed = [member(i, 0) for i in range(20)] + [member(20 + i, 1) for i in range(3)]
    g = decode_groups([*rows(10), *packed, *rows(10)], max_files=8)
    assert g == [(0, 1), (1, 20), (21, 3), (24, 1)]
