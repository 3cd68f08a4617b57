"""Sampling strategies: deterministic per (seed, epoch), class frequencies as promised."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ConfigError
from core.train.samplers import build_sampler, list_samplers, sampling_preview

# 300 of class 0, 100 of class 1, 20 of class 2, shuffled
LABELS = np.random.default_rng(7).permutation(np.repeat([0, 1, 2], [300, 100, 20]))


@pytest.mark.parametrize("name", list_samplers())
def test_every_sampler_is_deterministic_per_seed_and_epoch(name):
    a = build_sampler(name, LABELS, seed=3)
    b = build_sampler(name, LABELS, seed=3)
    assert np.array_equal(a.indices(5), b.indices(5))
    assert not np.array_equal(a.indices(5), a.indices(6))
    assert not np.array_equal(a.indices(5), build_sampler(name, LABELS, seed=4).indices(5))
    idx = a.indices(0)
    assert idx.dtype.kind == "i" and idx.min() >= 0 and idx.max() < len(LABELS)
    assert len(idx) == a.summary["epoch_size"]
    json.dumps(a.summary)


def test_none_is_a_permutation():
    idx = build_sampler("none", LABELS, seed=0).indices(2)
    assert np.array_equal(np.sort(idx), np.arange(len(LABELS)))


def test_oversample_makes_classes_about_equally_frequent():
    s = build_sampler("oversample", LABELS, seed=1)
    drawn = np.concatenate([LABELS[s.indices(e)] for e in range(20)])
    freq = np.bincount(drawn, minlength=3) / len(drawn)
    # 8400 draws, p = 1/3 each: one standard deviation is 0.005
    assert freq == pytest.approx([1 / 3] * 3, abs=0.025)
    assert s.summary["per_class_expected"] == pytest.approx([140, 140, 140])


def test_oversample_epoch_size():
    s = build_sampler("oversample", LABELS, {"epoch_size": 90}, seed=1)
    assert len(s.indices(0)) == 90


@pytest.mark.parametrize(
    ("ratio", "expected"), [(1.0, [20, 20, 20]), (2.5, [50, 50, 20]), (10, [200, 100, 20])]
)
def test_undersample_respects_the_ratio_exactly(ratio, expected):
    s = build_sampler("undersample", LABELS, {"ratio": ratio}, seed=2)
    for epoch in range(3):
        idx = s.indices(epoch)
        assert len(np.unique(idx)) == len(idx), "drawn without replacement"
        assert np.bincount(LABELS[idx], minlength=3).tolist() == expected
    assert s.summary["per_class_expected"] == expected


def test_undersample_keeps_all_minority_and_redraws_the_majority():
    s = build_sampler("undersample", LABELS, seed=2)
    e0, e1 = s.indices(0), s.indices(1)
    minority = np.flatnonzero(LABELS == 2)
    assert set(minority) <= set(e0) and set(minority) <= set(e1)
    assert set(e0[LABELS[e0] == 0]) != set(e1[LABELS[e1] == 0])


def test_sampling_preview_from_counts():
    assert sampling_preview("undersample", [300, 100, 20], {"ratio": 2})["per_class_expected"] == [40, 40, 20]
    assert sampling_preview("none", [3, 1, 0])["per_class_expected"] == [3, 1, 0]
    assert sampling_preview("oversample", [30, 10])["per_class_expected"] == pytest.approx([20, 20])


def test_undersample_names_an_empty_class_and_bad_params():
    with pytest.raises(ConfigError, match="class 1 has 0"):
        build_sampler("undersample", np.array([0, 0, 2, 2]))
    with pytest.raises(ConfigError, match="ratio"):
        build_sampler("undersample", LABELS, {"ratio": 0.5})
    with pytest.raises(ConfigError, match="epoch_size"):
        build_sampler("oversample", LABELS, {"epoch_size": 0})
    with pytest.raises(ConfigError, match="replace"):
        build_sampler("oversample", LABELS, {"replace": False})
