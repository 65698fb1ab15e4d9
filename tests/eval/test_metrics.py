"""pass@k, avg@k and per-benchmark metrics on fixed verdicts, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from mm_gmpo.evaluation.metrics import average, benchmark_metrics, default_ks, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (10, 3, 1, 0.3),  # pass@1 is c/n
        (16, 0, 4, 0.0),
        (16, 13, 4, 1.0),  # only 3 wrong samples: any 4 contain a right one
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 1 - 100/200; binomials ~1e58
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_definition():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_rejects_impossible_inputs():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(16) == [1, 2, 4, 8, 16]
    assert default_ks(6, extra=[3, 7]) == [1, 2, 3, 4, 6]


def _row(i: int, verdicts: list[int], tokens: list[int], truncated: list[bool] | None = None) -> dict:
    truncated = truncated or [False] * len(verdicts)
    return {
        "index": i,
        "id": f"p{i}",
        "samples": [
            {"correct": float(v), "num_tokens": t, "truncated": tr, "extracted": "1" if v else None}
            for v, t, tr in zip(verdicts, tokens, truncated)
        ],
    }


def test_benchmark_metrics_exact_numbers():
    rows = [
        _row(0, [1, 0, 0, 1], [10, 20, 30, 40]),  # c = 2
        _row(1, [0, 0, 0, 0], [5, 5, 5, 5], truncated=[True, False, False, False]),  # c = 0
        _row(2, [1, 1, 1, 1], [1, 2, 3, 4]),  # c = 4
    ]
    m = benchmark_metrics(rows)
    assert m["problems"] == 3
    assert m["samples_per_problem"] == 4
    assert m["correct"] == 6
    assert m["pass@1"] == pytest.approx(0.5)  # (2/4 + 0 + 4/4) / 3
    assert m["avg@4"] == pytest.approx(0.5)
    assert m["pass@2"] == pytest.approx(11 / 18)  # (5/6 + 0 + 1) / 3
    assert m["pass@4"] == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3
    assert m["mean_response_tokens"] == pytest.approx(130 / 12)
    assert m["truncated_fraction"] == pytest.approx(1 / 12)
    assert m["no_answer_fraction"] == pytest.approx(6 / 12)


def test_greedy_single_sample_is_plain_accuracy():
    rows = [_row(i, [v], [3]) for i, v in enumerate([1, 0, 1, 1, 0])]
    m = benchmark_metrics(rows)
    assert m["pass@1"] == pytest.approx(0.6)
    assert "pass@2" not in m


def test_average_is_macro():
    assert average([0.1, 0.2, 0.6]) == pytest.approx(0.3)
    assert average([]) is None
