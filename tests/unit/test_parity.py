"""`remembered`: the export's two passes over the eval split run the artifact once per window."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.parity import remembered
from service.runtime.encoding import Window


def _window(*ids: int, second_from: int = 1) -> Window:
    types = [0 if i < second_from else 1 for i in range(len(ids))]
    return Window(input_ids=np.array(ids, np.int64), token_type_ids=np.array(types, np.int64))


def test_remembered_runs_each_distinct_window_once_and_keeps_the_order() -> None:
    calls: list[int] = []

    def forward(windows: Sequence[Window]) -> np.ndarray:
        calls.append(len(windows))
        return np.array([[float(w.input_ids.sum()), float(len(w))] for w in windows])

    run = remembered(forward)
    a, b, c = _window(1, 2, 3), _window(4, 5), _window(1, 2, 3, second_from=2)  # c: a's ids, other segments
    first = run([a, b, a, c])
    assert calls == [3]  # a once, b, and c (same ids as a, not the same window)
    again = run([_window(4, 5), c, a])  # equal windows built anew: nothing runs
    assert calls == [3]
    np.testing.assert_array_equal(first, [[6, 3], [9, 2], [6, 3], [6, 3]])
    np.testing.assert_array_equal(again, [[9, 2], [6, 3], [6, 3]])
    run([_window(7)])
    assert calls == [3, 1]
