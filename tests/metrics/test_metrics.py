"""Generation metrics against values worked out by hand on fixed strings."""
from __future__ import annotations

import math

import pytest

from harness.metrics import scores as metrics


def test_normalisation_is_the_stated_one():
    assert metrics.normalize("  Iraq. ") == "iraq"
    assert metrics.normalize("New\tYork-City!") == "new york city"
    assert metrics.normalize("Ｉｒａｑ") == "iraq"  # NFKC folds full-width letters


def test_exact_match_after_normalisation():
    # "Iraq." ~ "iraq", "IRAQ" ~ "iraq ", but the article in "the Iraq" is kept: 2 of 3
    assert metrics.exact_match(["Iraq.", "the Iraq", "IRAQ"], ["iraq", "Iraq", "iraq "]) == pytest.approx(2 / 3)


def test_rouge_l_is_the_lcs_f1():
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat": P = R = 5/6
    # LCS("a b c", "a c") = 2: P = 2/3, R = 1, F = 2PR/(P+R) = 0.8
    got = metrics.rouge_l(["the cat sat on the mat", "a b c"], ["the cat is on the mat", "a c"])
    assert got == pytest.approx((5 / 6 + 0.8) / 2)


def test_bleu_is_the_geometric_mean_of_ngram_precisions_and_carries_its_signature():
    # hyp "a b c d e" vs ref "a b c d f": 1..4-gram precisions 4/5, 3/4, 2/3, 1/2; same length, BP = 1
    score, signature = metrics.bleu(["a b c d e"], ["a b c d f"])
    assert score == pytest.approx(100 * (0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25, rel=1e-6)
    assert "tok:13a" in signature and "version:" in signature
    assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"])[0] == pytest.approx(100)


def test_perplexity_is_exp_mean_nll():
    assert metrics.perplexity(2 * math.log(4), 2) == pytest.approx(4.0)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        metrics.exact_match(["a", "b"], ["a"])
