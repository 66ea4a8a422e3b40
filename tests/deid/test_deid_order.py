"""With pixel redaction and several workers, the largest files go first, so that no worker is left alone with
a large radiograph at the end of a batch (measured: the last files straggled on 2 workers)."""

from __future__ import annotations

from medsight.deid.run import largest_first


def test_largest_first_orders_by_size_then_path(tmp_path):
    sizes = {"a.dcm": 10, "b.dcm": 3000, "c.dcm": 500, "d.dcm": 3000}
    paths = []
    for name, n in sizes.items():
        (tmp_path / name).write_bytes(b"x" * n)
        paths.append(tmp_path / name)
    assert [p.name for p in largest_first(paths)] == ["b.dcm", "d.dcm", "c.dcm", "a.dcm"]
