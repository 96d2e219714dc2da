"""Self-checks of the NumPy LRP oracle (tests/oracle.py) against facts that
hold by construction of the rules (conservation, worked examples, structure).
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # noqa: E402

WEIGHTS_PATH = "/work/shared/data/sst_bilstm_li2016/weights.npz"
VARIANT_GATES = {
    "standard": ("i", "f", "g", "o"),
    "no_forget": ("i", "g", "o"),
    "no_output": ("i", "f", "g"),
    "rudder": ("i", "g"),
}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def random_params(rng, d, e, variant="standard", scale=0.5):
    params = {"Wx": {}, "Wh": {}, "b": {}}
    for q in VARIANT_GATES[variant]:
        params["Wx"][q] = rng.normal(0.0, scale, (d, e))
        params["Wh"][q] = rng.normal(0.0, scale, (d, d))
        params["b"][q] = rng.normal(0.0, scale, (d,))
    if variant == "rudder":  # unused blocks may be absent
        del params["Wh"]["g"]
        del params["Wx"]["i"]
    return params


def random_reference_weights(rng, d, e, C, scale=0.5):
    w = {}
    for side in ("Left", "Right"):
        w["Wxh_" + side] = rng.normal(0.0, scale, (4 * d, e))
        w["Whh_" + side] = rng.normal(0.0, scale, (4 * d, d))
        w["bxh_" + side] = rng.normal(0.0, scale, (4 * d,))
        w["bhh_" + side] = rng.normal(0.0, scale, (4 * d,))
        w["Why_" + side] = rng.normal(0.0, scale, (C, d))
    return w


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def vectorised_forward(x, params, variant, h0, c0):
    """Independent one-line-per-gate forward."""
    P = params
    h, c = h0.copy(), c0.copy()
    hs, cs = [], []
    for xt in x:
        if variant == "rudder":
            i = sigmoid(P["Wh"]["i"] @ h + P["b"]["i"])
            g = np.tanh(P["Wx"]["g"] @ xt + P["b"]["g"])
            c = c + i * g
            h = c
        else:
            i = sigmoid(P["Wx"]["i"] @ xt + P["Wh"]["i"] @ h + P["b"]["i"])
            g = np.tanh(P["Wx"]["g"] @ xt + P["Wh"]["g"] @ h + P["b"]["g"])
            f = (sigmoid(P["Wx"]["f"] @ xt + P["Wh"]["f"] @ h + P["b"]["f"])
                 if "f" in P["b"] else 1.0)
            o = (sigmoid(P["Wx"]["o"] @ xt + P["Wh"]["o"] @ h + P["b"]["o"])
                 if "o" in P["b"] else 1.0)
            c = f * c + i * g
            h = o * np.tanh(c)
        hs.append(h)
        cs.append(c)
    return np.array(hs), np.array(cs)


def vectorised_reference_scores(w, x):
    """Independent forward of the reference bidirectional model (i, g, f, o blocks)."""
    def run(side, xs):
        d = w["Whh_" + side].shape[1]
        h, c = np.zeros(d), np.zeros(d)
        for xt in xs:
            z = (w["Wxh_" + side] @ xt + w["Whh_" + side] @ h
                 + w["bxh_" + side] + w["bhh_" + side])
            i, g, f, o = (sigmoid(z[:d]), np.tanh(z[d:2 * d]),
                          sigmoid(z[2 * d:3 * d]), sigmoid(z[3 * d:]))
            c = f * c + i * g
            h = o * np.tanh(c)
        return h
    return w["Why_Left"] @ run("Left", x) + w["Why_Right"] @ run("Right", x[::-1])


# ---------------------------------------------------------------------------
# sign
# ---------------------------------------------------------------------------
def test_sign():
    np.testing.assert_array_equal(oracle.sign(np.array([-2.0, -1e-300, 0.0, -0.0, 3.0])),
                                  [-1.0, -1.0, 1.0, 1.0, 1.0])


# ---------------------------------------------------------------------------
# lrp_linear
# ---------------------------------------------------------------------------
def test_lrp_linear_worked_example():
    a = np.array([1.0, 2.0])
    W = np.array([[3.0], [-1.0]])
    b = np.array([0.5])
    R = np.array([2.0])
    # z = 1.5, s = +1, denominator 1.6, N = 2
    (R0,) = oracle.lrp_linear([a], [W], b, None, R, 0.1, 0.0)
    np.testing.assert_allclose(R0, [3.0 / 1.6 * 2.0, -2.0 / 1.6 * 2.0], rtol=0, atol=1e-14)
    (R1,) = oracle.lrp_linear([a], [W], b, None, R, 0.1, 1.0)
    np.testing.assert_allclose(R1, [(3.0 + 0.3) / 1.6 * 2.0, (-2.0 + 0.3) / 1.6 * 2.0],
                               rtol=0, atol=1e-14)
    (Rh,) = oracle.lrp_linear([a], [W], b, None, R, 0.1, 0.5)
    np.testing.assert_allclose(Rh, [(3.0 + 0.15) / 1.6 * 2.0, (-2.0 + 0.15) / 1.6 * 2.0],
                               rtol=0, atol=1e-14)


def test_lrp_linear_sign_of_zero_is_plus():
    # z = 0 exactly -> s = +1, denominator = +eps
    a = np.array([1.0, -1.0])
    W = np.array([[1.0], [1.0]])
    eps = 0.25
    (R,) = oracle.lrp_linear([a], [W], None, np.array([0.0]), np.array([1.0]), eps, 1.0)
    np.testing.assert_allclose(R, [1.0 / eps + 0.5, -1.0 / eps + 0.5], rtol=0, atol=1e-13)


def test_lrp_linear_multi_input_equals_concatenated():
    rng = np.random.default_rng(0)
    a1, a2 = rng.normal(size=3), rng.normal(size=5)
    W1, W2 = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    b, R = rng.normal(size=4), rng.normal(size=4)
    z = a1 @ W1 + a2 @ W2 + b
    for bf in (0.0, 0.3, 1.0):
        P1, P2 = oracle.lrp_linear([a1, a2], [W1, W2], b, z, R, 1e-2, bf)
        (Pc,) = oracle.lrp_linear([np.concatenate([a1, a2])], [np.vstack([W1, W2])],
                                  b, None, R, 1e-2, bf)
        np.testing.assert_allclose(np.concatenate([P1, P2]), Pc, rtol=1e-13, atol=1e-13)
        assert P1.shape == (3,) and P2.shape == (5,)


def test_lrp_linear_conservation():
    rng = np.random.default_rng(1)
    a1, a2 = rng.normal(size=4), rng.normal(size=6)
    W1, W2 = rng.normal(size=(4, 7)), rng.normal(size=(6, 7))
    b, R = rng.normal(size=7), rng.normal(size=7)
    # bias_factor = 1: exact conservation (with and without bias)
    for bias in (b, None):
        parts = oracle.lrp_linear([a1, a2], [W1, W2], bias, None, R, 1e-2, 1.0)
        assert abs(sum(p.sum() for p in parts) - R.sum()) < 1e-12
    # bias_factor = 0, no bias, tiny eps: approximate conservation
    parts = oracle.lrp_linear([a1, a2], [W1, W2], None, None, R, 1e-12, 0.0)
    assert abs(sum(p.sum() for p in parts) - R.sum()) < 1e-8
    # bias_factor = 0 with a bias does NOT conserve (the check can fail)
    parts = oracle.lrp_linear([a1, a2], [W1, W2], b, None, R, 1e-2, 0.0)
    assert abs(sum(p.sum() for p in parts) - R.sum()) > 1e-3


# ---------------------------------------------------------------------------
# lrp_gated
# ---------------------------------------------------------------------------
def test_lrp_gated_rules():
    rng = np.random.default_rng(2)
    gate = rng.uniform(0.0, 1.0, 8)
    signal = rng.normal(size=8)
    signal[0] = -gate[0]           # gate + signal == 0 -> sign +1
    R = rng.normal(size=8)
    eps = 1e-2

    Rg, Rs = oracle.lrp_gated(gate, signal, R, "all", eps)
    np.testing.assert_array_equal(Rg, 0.0)
    np.testing.assert_array_equal(Rs, R)

    Rg, Rs = oracle.lrp_gated(gate, signal, R, "half", eps)
    np.testing.assert_array_equal(Rg, R / 2)
    np.testing.assert_array_equal(Rs, R / 2)
    np.testing.assert_allclose(Rg + Rs, R, rtol=0, atol=1e-15)

    Rg, Rs = oracle.lrp_gated(gate, signal, R, "prop", eps)
    u = gate + signal + eps * np.where(gate + signal >= 0, 1.0, -1.0)
    np.testing.assert_allclose(Rg + Rs, (gate + signal) / u * R, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(Rg, gate / u * R, rtol=1e-13, atol=1e-15)
    # element 0: u = +eps exactly
    np.testing.assert_allclose([Rg[0], Rs[0]], [gate[0] / eps * R[0], signal[0] / eps * R[0]],
                               rtol=1e-10)

    Rg, Rs = oracle.lrp_gated(gate, signal, R, "abs", eps)
    D = np.abs(gate) + np.abs(signal) + eps
    np.testing.assert_allclose(Rg, np.abs(gate) / D * R, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(Rs, np.abs(signal) / D * R, rtol=1e-13, atol=1e-15)
    # the abs split keeps the sign of R and loses a fraction eps/D of it
    assert np.all(np.abs(Rg + Rs) < np.abs(R))
    assert np.all(np.sign(Rg + Rs) == np.sign(R))


# ---------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["standard", "no_forget", "no_output", "rudder"])
def test_forward_matches_vectorised(variant):
    rng = np.random.default_rng(3)
    d, e, T = 3, 4, 5
    params = random_params(rng, d, e, variant)
    x = rng.normal(size=(T, e))
    h0, c0 = rng.normal(size=d), rng.normal(size=d)
    fw = oracle.lstm_forward(x, params, variant=variant, h0=h0, c0=c0)
    h_ref, c_ref = vectorised_forward(x, params, variant, h0, c0)
    np.testing.assert_allclose(fw["h"], h_ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(fw["c"], c_ref, rtol=1e-13, atol=1e-14)


def test_reference_forward_matches_vectorised():
    rng = np.random.default_rng(4)
    w = random_reference_weights(rng, 3, 4, 5)
    x = rng.normal(size=(5, 4))
    np.testing.assert_allclose(oracle.arras_bilstm_forward(w, x),
                               vectorised_reference_scores(w, x), rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------
# lstm_lrp conservation
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["standard", "no_forget", "no_output", "rudder"])
@pytest.mark.parametrize("gate", ["all", "half"])
def test_lstm_lrp_conservation_exact(variant, gate):
    rng = np.random.default_rng(5)
    d, e, T = 3, 4, 5
    params = random_params(rng, d, e, variant)
    x = rng.normal(size=(T, e))
    h0, c0 = rng.normal(size=d), rng.normal(size=d)
    R_hs = rng.normal(size=(T, d))
    R_c_last = rng.normal(size=d)
    R_x, R_h0, R_c0 = oracle.lstm_lrp(x, params, R_hs, R_c_last, eps=1e-3, bias_factor=1.0,
                                      gate=gate, variant=variant, h0=h0, c0=c0)
    assert R_x.shape == (T, e) and R_h0.shape == (d,) and R_c0.shape == (d,)
    total_in = R_hs.sum() + R_c_last.sum()
    total_out = R_x.sum() + R_h0.sum() + R_c0.sum()
    assert abs(total_out - total_in) < 1e-10
    # with bias_factor = 0 relevance is absorbed by biases/stabilisers: not conserved
    R_x, R_h0, R_c0 = oracle.lstm_lrp(x, params, R_hs, R_c_last, eps=1e-3, bias_factor=0.0,
                                      gate=gate, variant=variant, h0=h0, c0=c0)
    assert abs(R_x.sum() + R_h0.sum() + R_c0.sum() - total_in) > 1e-6


def _record_split_deficits(monkeypatch):
    """Wrap oracle.lrp_gated so that every call records R - R_gate - R_signal."""
    deficits = []
    original = oracle.lrp_gated

    def recording(gate, signal, R, rule, eps):
        R_gate, R_signal = original(gate, signal, R, rule, eps)
        deficits.append(float(np.sum(np.asarray(R) - R_gate - R_signal)))
        return R_gate, R_signal

    monkeypatch.setattr(oracle, "lrp_gated", recording)
    return deficits


@pytest.mark.parametrize("variant", ["standard", "no_forget", "no_output", "rudder"])
@pytest.mark.parametrize("gate", ["prop", "abs"])
def test_lstm_lrp_conservation_leaky_rules(variant, gate, monkeypatch):
    # "prop" and "abs" have eps in the split denominator, so each gated product
    # passes on only the fraction (g+s)/u resp. (|g|+|s|)/D of its relevance R_p.
    # Every other step conserves exactly at bias_factor = 1, so the total leak
    # must equal the sum of the per-split deficits.  The leak is NOT small in
    # general for "prop" (g+s ~ 0 makes R_gate, R_signal huge and of opposite
    # sign, and their later deficits do not cancel); it vanishes as eps -> 0.
    rng = np.random.default_rng(6)
    d, e, T = 3, 4, 5
    params = random_params(rng, d, e, variant)
    x = rng.normal(size=(T, e))
    h0, c0 = rng.normal(size=d), rng.normal(size=d)
    R_hs = rng.normal(size=(T, d))
    total_in = R_hs.sum()
    scale = np.abs(R_hs).sum()
    deficits = _record_split_deficits(monkeypatch)
    out = oracle.lstm_lrp(x, params, R_hs, eps=1e-3, bias_factor=1.0, gate=gate,
                          variant=variant, h0=h0, c0=c0)
    leak = total_in - (out[0].sum() + out[1].sum() + out[2].sum())
    n_split = 2 if variant in ("standard", "no_output") else 1
    if variant in ("standard", "no_forget"):
        n_split += 1
    assert len(deficits) == n_split * T
    assert abs(leak) > 1e-12
    assert abs(leak - sum(deficits)) < 1e-9 * max(1.0, scale, np.abs(deficits).sum())
    if gate == "abs":
        assert abs(leak) < 0.05 * scale
    out = oracle.lstm_lrp(x, params, R_hs, eps=1e-10, bias_factor=1.0, gate=gate,
                          variant=variant, h0=h0, c0=c0)
    leak = total_in - (out[0].sum() + out[1].sum() + out[2].sum())
    assert abs(leak) < 1e-5 * scale


def test_lstm_lrp_gate_all_sends_nothing_through_gates():
    # With gate="all" gates get no relevance, so h_{t-1} only receives relevance
    # through the cell input's recurrent weights Wh["g"]: zero them -> R_h0 == 0.
    rng = np.random.default_rng(7)
    d, e, T = 3, 4, 4
    params = random_params(rng, d, e)
    params["Wh"]["g"] = np.zeros((d, d))
    x = rng.normal(size=(T, e))
    h0, c0 = rng.normal(size=d), rng.normal(size=d)
    R_hs = rng.normal(size=(T, d))
    # (bias_factor = 0: with bias_factor > 0 the bias/stabiliser share of the
    # g pre-activation would reach h_{t-1} regardless of the weights)
    _, R_h0, R_c0 = oracle.lstm_lrp(x, params, R_hs, eps=1e-3, bias_factor=0.0,
                                    gate="all", h0=h0, c0=c0)
    np.testing.assert_array_equal(R_h0, 0.0)
    assert np.abs(R_c0).sum() > 0
    _, R_h0, _ = oracle.lstm_lrp(x, params, R_hs, eps=1e-3, bias_factor=0.0,
                                 gate="half", h0=h0, c0=c0)
    assert np.abs(R_h0).sum() > 1e-6
    _, R_h0, _ = oracle.lstm_lrp(x, params, R_hs, eps=1e-3, bias_factor=1.0,
                                 gate="all", h0=h0, c0=c0)
    assert np.abs(R_h0).sum() > 1e-6


# ---------------------------------------------------------------------------
# reference bidirectional model
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("gate", ["all", "half"])
def test_bilstm_conservation_random(gate):
    rng = np.random.default_rng(8)
    d, e, T, C = 3, 4, 5, 3
    w = random_reference_weights(rng, d, e, C)
    x = rng.normal(size=(T, e))
    for target in range(C):
        R_x, R_init, scores = oracle.arras_bilstm_lrp(w, x, target, eps=1e-3,
                                                      bias_factor=1.0, gate=gate)
        assert R_x.shape == (T, e)
        assert isinstance(R_init, float)
        assert abs(R_x.sum() + R_init - scores[target]) < 1e-10


@pytest.mark.parametrize("gate", ["prop", "abs"])
def test_bilstm_conservation_leaky_rules(gate, monkeypatch):
    rng = np.random.default_rng(9)
    d, e, T, C = 3, 4, 5, 3
    w = random_reference_weights(rng, d, e, C)
    x = rng.normal(size=(T, e))
    target = 1
    deficits = _record_split_deficits(monkeypatch)
    R_x, R_init, scores = oracle.arras_bilstm_lrp(w, x, target, eps=1e-3,
                                                  bias_factor=1.0, gate=gate)
    assert len(deficits) == 2 * 3 * T  # 3 gated products per step, 2 directions
    leak = scores[target] - (R_x.sum() + R_init)
    assert abs(leak) > 1e-12
    assert abs(leak - sum(deficits)) < 1e-9 * max(1.0, np.abs(deficits).sum())
    if gate == "abs":
        assert abs(leak) < 0.05 * abs(scores[target])
    # eps -> 0: the leak vanishes relative to the relevance magnitudes (which for
    # "prop" can be far larger than the score because of near-cancelling splits)
    R_x, R_init, scores = oracle.arras_bilstm_lrp(w, x, target, eps=1e-10,
                                                  bias_factor=1.0, gate=gate)
    leak_small = scores[target] - (R_x.sum() + R_init)
    magnitude = np.abs(R_x).sum() + abs(R_init) + abs(scores[target])
    assert abs(leak_small) < 1e-6 * magnitude
    assert abs(leak_small) < 1e-3 * abs(leak)


@pytest.mark.parametrize("side", ["Left", "Right"])
def test_bilstm_direction_alignment(side):
    # Only one direction is read out, all biases are zero and the inputs are
    # zero except at the position that direction reads LAST (x[T-1] for Left,
    # x[0] for Right): before it the state stays exactly 0, so with
    # bias_factor = 0 all relevance must land on that single position.
    rng = np.random.default_rng(10)
    d, e, T, C = 3, 4, 5, 2
    w = random_reference_weights(rng, d, e, C)
    other = "Right" if side == "Left" else "Left"
    w["Why_" + other] = np.zeros_like(w["Why_" + other])
    for s in ("Left", "Right"):
        w["bxh_" + s] = np.zeros_like(w["bxh_" + s])
        w["bhh_" + s] = np.zeros_like(w["bhh_" + s])
    pos = T - 1 if side == "Left" else 0
    x = np.zeros((T, e))
    x[pos] = rng.normal(size=e)
    R_x, R_init, scores = oracle.arras_bilstm_lrp(w, x, 0, eps=1e-3, bias_factor=0.0)
    assert np.abs(R_x[pos]).sum() > 1e-6
    mask = np.ones(T, bool)
    mask[pos] = False
    np.testing.assert_array_equal(R_x[mask], 0.0)


def test_bilstm_conservation_real_weights():
    if not os.path.exists(WEIGHTS_PATH):
        pytest.skip("reference weights not available")
    data = np.load(WEIGHTS_PATH)
    w = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
    assert w["Whh_Left"].shape == (240, 60) and w["Why_Left"].shape == (5, 60)
    rng = np.random.default_rng(11)
    T = 6
    x = rng.uniform(-1.0, 1.0, (T, 60)) * 0.5
    np.testing.assert_allclose(oracle.arras_bilstm_forward(w, x),
                               vectorised_reference_scores(w, x), rtol=1e-12, atol=1e-13)
    for target, gate in ((0, "all"), (3, "all"), (2, "half")):
        R_x, R_init, scores = oracle.arras_bilstm_lrp(w, x, target, eps=1e-3,
                                                      bias_factor=1.0, gate=gate)
        assert abs(R_x.sum() + R_init - scores[target]) < 1e-10
