"""One row per file, enforced: the rows sink.index says must go are folded away.

Each file holding such rows is folded alone (sink.commit.fold with `drop`): a new part with the
rows that stay is published before the old file is deleted, under the fold's journal, so a kill
at any point loses no row (the next run finishes the fold or finds the duplicate again).
"""

from __future__ import annotations

from earmark.sink.commit import fold
from earmark.sink.index import scan_output
from earmark.storage import Location, LocationLike


def repair_output(out: LocationLike) -> dict[str, int]:
    """Drop superseded and duplicate rows; returns the counts of the output afterwards."""
    out = Location.of(out)
    index = scan_output(out)
    for path, rows in sorted(index.drop.items()):
        fold(out, [path], drop={path: rows})
    return {
        "rows": index.rows,
        "ok": index.ok,
        "drop": 0,
        "duplicates": index.duplicates,
        "superseded": index.superseded,
    }
