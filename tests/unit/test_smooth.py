"""Temporal Gaussian smoothing: offline and streaming (identical), edges, gaps, noise reduction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reenact.face.smooth import StreamingSmoother, gaussian_weights, kernel_radius, smooth_offline


def stream(values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    s = StreamingSmoother(sigma)
    out = np.full(values.shape, np.nan)
    emitted = []
    for t, (v, ok) in enumerate(zip(values, valid, strict=True)):
        for pos, value in s.push(v if ok else None, payload=t):
            emitted.append(pos)
            if value is not None:
                out[pos] = value
    for pos, value in s.flush():
        emitted.append(pos)
        if value is not None:
            out[pos] = value
    assert emitted == list(range(len(values)))
    return out


def test_radius_and_weights():
    assert kernel_radius(2.0) == 6 and kernel_radius(0.5) == 2 and kernel_radius(0) == 0
    w = gaussian_weights(2.0)
    assert len(w) == 13 and w[6] == 1.0 and w[0] == pytest.approx(np.exp(-4.5))
    with pytest.raises(ValueError):
        kernel_radius(-1)


def test_constant_signal_unchanged_including_ends_and_gaps():
    values = np.tile(np.array([3.5, -2.0, 7.25]), (40, 1))
    valid = np.ones(40, bool)
    valid[[0, 5, 6, 7, 30]] = False
    out = smooth_offline(values, valid, sigma=2.0)
    np.testing.assert_allclose(out[valid], values[valid], rtol=1e-12)
    assert np.isnan(out[~valid]).all()


def test_linear_signal_kept_in_the_interior():
    t = np.arange(50, dtype=float)[:, None]
    out = smooth_offline(2.0 * t + 1.0, sigma=2.0)
    np.testing.assert_allclose(out[6:-6], (2.0 * t + 1.0)[6:-6], atol=1e-9)


def test_gap_frames_are_skipped_with_renormalized_weights():
    values = np.array([[0.0], [10.0], [20.0], [30.0]])
    valid = np.array([True, False, True, True])
    out = smooth_offline(values, valid, sigma=0.5)  # radius 2
    w = gaussian_weights(0.5)  # offsets -2..2
    expect0 = (w[2] * 0 + w[4] * 20) / (w[2] + w[4])  # frame 1 skipped, frame 3 out of reach
    expect2 = (w[0] * 0 + w[2] * 20 + w[3] * 30) / (w[0] + w[2] + w[3])
    assert out[0, 0] == pytest.approx(expect0) and out[2, 0] == pytest.approx(expect2)
    assert np.isnan(out[1, 0])


def test_noise_variance_reduced_by_sum_of_squared_weights():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, (20000, 2))
    out = smooth_offline(noise, sigma=2.0)
    w = gaussian_weights(2.0)
    expected = float(((w / w.sum()) ** 2).sum())  # about 1 / (2 sqrt(pi) sigma) = 0.141
    ratio = out[10:-10].var() / noise[10:-10].var()
    assert ratio == pytest.approx(expected, rel=0.05)
    assert expected == pytest.approx(1 / (2 * np.sqrt(np.pi) * 2.0), rel=0.01)


@pytest.mark.parametrize("sigma", [0.0, 0.7, 2.0, 3.3])
def test_streaming_equals_offline_exactly(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    values = rng.normal(size=(57, 4, 3))
    valid = rng.random(57) > 0.2
    off = smooth_offline(values, valid, sigma)
    on = stream(values, valid, sigma)
    np.testing.assert_array_equal(np.isnan(off), np.isnan(on))
    np.testing.assert_array_equal(off[valid], on[valid])  # bit-identical


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-1e3, 1e3)), min_size=1, max_size=30),
       st.sampled_from([0.0, 0.4, 1.0, 2.0]))
def test_streaming_equals_offline_property(seq, sigma):
    valid = np.array([v is not None for v in seq])
    values = np.array([[0.0 if v is None else v] for v in seq])
    off = smooth_offline(values, valid, sigma)
    on = stream(values, valid, sigma)
    np.testing.assert_array_equal(off[valid], on[valid])


def test_streaming_emits_after_radius_frames():
    s = StreamingSmoother(1.0)  # radius 3
    out = [s.push(np.array([float(t)]), payload=t) for t in range(5)]
    assert [len(o) for o in out] == [0, 0, 0, 1, 1]
    assert out[3][0][0] == 0 and s.pending == 3
    rest = s.flush()
    assert [p for p, _ in rest] == [2, 3, 4] and s.pending == 0
    # sigma 0: immediate, unchanged
    z = StreamingSmoother(0.0)
    assert z.push(np.array([1.5]), "a") == [("a", np.array([1.5]))]
    assert z.push(None, "b") == [("b", None)]
