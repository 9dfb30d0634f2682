"""bench/bench_preview.py's verdict: medians with their spread, and the ratio of the medians against the bound
(the benchmark itself takes minutes; it is run by hand, see its docstring)."""

from bench.bench_preview import MAX_RATIO, summarise


def test_ratio_of_the_medians_within_the_bound():
    text, ok = summarise([2.0, 2.5, 3.0], [8.0, 9.0, 30.0])
    assert ok and MAX_RATIO == 4
    assert "median 2.50 s (min 2.00, max 3.00, n=3)" in text
    assert "median 9.00 s (min 8.00, max 30.00, n=3)" in text
    assert "ratio:          3.6x the import floor (within 4x)" in text


def test_above_the_bound_fails():
    text, ok = summarise([2.0], [8.2])
    assert not ok and "4.1x the import floor (ABOVE 4x)" in text
    assert summarise([2.0], [9.0], max_ratio=5)[1]
