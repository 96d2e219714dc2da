"""Slow, literal NumPy reference ("oracle") for LRP on GRU, MGU and simple tanh RNN cells.

Companion of ``oracle.py`` (the LSTM oracle), written directly from the written rules and in the
same style: float64 throughout, explicit Python loops over lower unit i and upper unit j for
linear maps (via ``oracle.lrp_linear``) and over elements for element-wise maps and gated products
(via ``oracle.lrp_gated``). Nothing here is vectorised, so every line is a transcription of a formula.

Rules (s_j = +1 if z_j >= 0 else -1):
1. linear maps: R_i = sum_j (a_i w_ij + bias_factor*(b_j + eps*s_j)/N) / (z_j + eps*s_j) * R_j,
   N = number of lower units over all incoming layers ("identity" layers count their d units);
2. element-wise activations (tanh, sigmoid, 1 - sigmoid): relevance passes unchanged;
3. a sum u + v of two d-vectors: rule 1 with identity-stacked weights, no bias, N = 2d;
4. gated products gate*signal: "all" / "half" / "prop" / "abs" (see ``oracle.lrp_gated``).

Parameter layouts (oracle, per gate; a_q = Wx[q] @ x + Wh[q] @ h + b[q]):
* GRU:  {"Wx": {"r","z","n": (d, e)}, "Wh": {"r","z","n": (d, d)}, "b": {"r","z","n": (d,)},
         "bhn": (d,)}
* MGU:  {"Wx": {"f","n"}, "Wh": {"f","n"}, "b": {"f","n"}, "bhn": (d,)}  ("bhn" unused and may be
        absent with reset_gate=False)
* SimpleCell: {"Wi": (d, e), "Wh": (d, d), "b": (d,)}  ("Wx" is accepted in place of "Wi").
"""

import math

import numpy as np

import oracle
from oracle import lrp_gated, lrp_linear, sign  # noqa: F401  (sign re-exported for convenience)

GATE_RULES = oracle.GATE_RULES


# ---------------------------------------------------------------------------
# Small literal helpers
# ---------------------------------------------------------------------------
def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _matvec(W, v):
    """sum_i W[j, i] * v[i] for every j, as explicit loops."""
    W = _f64(W)
    v = _f64(v)
    out = np.zeros(W.shape[0])
    for j in range(W.shape[0]):
        acc = 0.0
        for i in range(W.shape[1]):
            acc += float(W[j, i]) * float(v[i])
        out[j] = acc
    return out


def _identity(d):
    I = np.zeros((d, d))
    for k in range(d):
        I[k, k] = 1.0
    return I


def _check_x(x):
    x = _f64(x)
    if x.ndim != 2:
        raise ValueError("x must be (T, e)")
    return x


def _check_gate(gate):
    if gate not in GATE_RULES:
        raise ValueError("unknown gate rule %r" % (gate,))


def _check_R(R_hs, T, d):
    R_hs = _f64(R_hs)
    if R_hs.shape != (T, d):
        raise ValueError("R_hs must be (T, d) = (%d, %d), got %s" % (T, d, R_hs.shape))
    return R_hs


# ---------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------
def gru_forward(x, P, h0=None):
    """Run the GRU over x (T, e).

    Returns a dict of (T, d) arrays: "h" (h_t), "h_prev" (state entering step t), "a_r", "a_z",
    "r", "z", "m" (Wh[n] h_prev + bhn), "p" (r*m), "a_n", "n", "u" ((1-z)*n), "v" (z*h_prev),
    plus "h0" (the initial state used).
    """
    x = _check_x(x)
    T = x.shape[0]
    d = _f64(P["b"]["n"]).shape[0]
    h_prev = np.zeros(d) if h0 is None else _f64(h0).copy()
    out = {k: np.zeros((T, d)) for k in
           ("h", "h_prev", "a_r", "a_z", "r", "z", "m", "p", "a_n", "n", "u", "v")}
    out["h0"] = h_prev.copy()
    bhn = _f64(P["bhn"])
    for t in range(T):
        out["h_prev"][t] = h_prev
        a_r = _matvec(P["Wx"]["r"], x[t]) + _matvec(P["Wh"]["r"], h_prev) + _f64(P["b"]["r"])
        a_z = _matvec(P["Wx"]["z"], x[t]) + _matvec(P["Wh"]["z"], h_prev) + _f64(P["b"]["z"])
        m = _matvec(P["Wh"]["n"], h_prev) + bhn
        wxn = _matvec(P["Wx"]["n"], x[t])
        h = np.zeros(d)
        for k in range(d):
            r = _sigmoid(a_r[k])
            z = _sigmoid(a_z[k])
            p = r * m[k]
            a_n = wxn[k] + p + float(P["b"]["n"][k])
            n = math.tanh(a_n)
            u = (1.0 - z) * n
            v = z * h_prev[k]
            h[k] = u + v
            out["a_r"][t, k], out["a_z"][t, k] = a_r[k], a_z[k]
            out["r"][t, k], out["z"][t, k] = r, z
            out["m"][t, k], out["p"][t, k] = m[k], p
            out["a_n"][t, k], out["n"][t, k] = a_n, n
            out["u"][t, k], out["v"][t, k] = u, v
        out["h"][t] = h
        h_prev = h
    return out


def gru_lrp(x, P, R_hs, *, eps=1e-3, bias_factor=0.0, gate="all", h0=None):
    """LRP backward through one GRU direction reading x[0], ..., x[T-1].

    R_hs: (T, d) relevance arriving at each h_t from outside the layer.
    Returns (R_x (T, e), R_h0 (d,)).
    """
    _check_gate(gate)
    x = _check_x(x)
    T, e = x.shape
    fw = gru_forward(x, P, h0=h0)
    d = fw["h"].shape[1]
    R_hs = _check_R(R_hs, T, d)
    I_d = _identity(d)
    WxT = {q: _f64(P["Wx"][q]).T for q in ("r", "z", "n")}
    WhT = {q: _f64(P["Wh"][q]).T for q in ("r", "z", "n")}

    R_x = np.zeros((T, e))
    R_h_from_next = np.zeros(d)
    for t in range(T - 1, -1, -1):
        h_prev = fw["h_prev"][t]
        z = fw["z"][t]
        R_h = R_hs[t] + R_h_from_next

        # h' = u + v  (rule 3)
        R_u, R_v = lrp_linear([fw["u"][t], fw["v"][t]], [I_d, I_d], None, fw["h"][t], R_h,
                              eps, bias_factor)
        # u = (1 - z) * n, v = z * h_prev  (rule 4), gates -> a_z (rule 2)
        one_minus_z = np.zeros(d)
        for k in range(d):
            one_minus_z[k] = 1.0 - z[k]
        R_1mz, R_n = lrp_gated(one_minus_z, fw["n"][t], R_u, gate, eps)
        R_zv, R_hv = lrp_gated(z, h_prev, R_v, gate, eps)
        R_az = R_1mz + R_zv
        # n = tanh(a_n) (rule 2); a_n = Wx[n] x + p + b[n] (rule 1, N = e + d)
        R_an = R_n
        R_xn, R_p = lrp_linear([x[t], fw["p"][t]], [WxT["n"], I_d], P["b"]["n"], fw["a_n"][t],
                               R_an, eps, bias_factor)
        # p = r * m (rule 4); r -> a_r (rule 2)
        R_r, R_m = lrp_gated(fw["r"][t], fw["m"][t], R_p, gate, eps)
        R_ar = R_r
        # m = Wh[n] h_prev + bhn (rule 1, N = d)
        (R_hm,) = lrp_linear([h_prev], [WhT["n"]], P["bhn"], fw["m"][t], R_m, eps, bias_factor)
        # gate pre-activations (rule 1, N = e + d)
        R_xr, R_hr = lrp_linear([x[t], h_prev], [WxT["r"], WhT["r"]], P["b"]["r"], fw["a_r"][t],
                                R_ar, eps, bias_factor)
        R_xz, R_hz = lrp_linear([x[t], h_prev], [WxT["z"], WhT["z"]], P["b"]["z"], fw["a_z"][t],
                                R_az, eps, bias_factor)

        R_x[t] = R_xn + R_xr + R_xz
        R_h_from_next = R_hv + R_hm + R_hr + R_hz
    return R_x, R_h_from_next


# ---------------------------------------------------------------------------
# MGU (minimal gated unit: one gate f used as reset and update gate)
# ---------------------------------------------------------------------------
def mgu_forward(x, P, h0=None, reset_gate=True):
    """Run the MGU over x (T, e).

    Returns a dict of (T, d) arrays: "h", "h_prev", "a_f", "f", "m", "p" (reset_gate only),
    "a_n", "n", "u" ((1-f)*n), "v" (f*h_prev), plus "h0".
    """
    x = _check_x(x)
    T = x.shape[0]
    d = _f64(P["b"]["n"]).shape[0]
    h_prev = np.zeros(d) if h0 is None else _f64(h0).copy()
    out = {k: np.zeros((T, d)) for k in
           ("h", "h_prev", "a_f", "f", "m", "p", "a_n", "n", "u", "v")}
    out["h0"] = h_prev.copy()
    for t in range(T):
        out["h_prev"][t] = h_prev
        a_f = _matvec(P["Wx"]["f"], x[t]) + _matvec(P["Wh"]["f"], h_prev) + _f64(P["b"]["f"])
        whn = _matvec(P["Wh"]["n"], h_prev)
        m = whn + _f64(P["bhn"]) if reset_gate else whn
        wxn = _matvec(P["Wx"]["n"], x[t])
        h = np.zeros(d)
        for k in range(d):
            f = _sigmoid(a_f[k])
            if reset_gate:
                p = f * m[k]
                a_n = wxn[k] + p + float(P["b"]["n"][k])
            else:
                p = 0.0
                a_n = wxn[k] + whn[k] + float(P["b"]["n"][k])
            n = math.tanh(a_n)
            u = (1.0 - f) * n
            v = f * h_prev[k]
            h[k] = u + v
            out["a_f"][t, k], out["f"][t, k] = a_f[k], f
            out["m"][t, k], out["p"][t, k] = m[k], p
            out["a_n"][t, k], out["n"][t, k] = a_n, n
            out["u"][t, k], out["v"][t, k] = u, v
        out["h"][t] = h
        h_prev = h
    return out


def mgu_lrp(x, P, R_hs, *, eps=1e-3, bias_factor=0.0, gate="all", h0=None, reset_gate=True):
    """LRP backward through one MGU direction reading x[0], ..., x[T-1].

    Returns (R_x (T, e), R_h0 (d,)).
    """
    _check_gate(gate)
    x = _check_x(x)
    T, e = x.shape
    fw = mgu_forward(x, P, h0=h0, reset_gate=reset_gate)
    d = fw["h"].shape[1]
    R_hs = _check_R(R_hs, T, d)
    I_d = _identity(d)
    WxT = {q: _f64(P["Wx"][q]).T for q in ("f", "n")}
    WhT = {q: _f64(P["Wh"][q]).T for q in ("f", "n")}

    R_x = np.zeros((T, e))
    R_h_from_next = np.zeros(d)
    for t in range(T - 1, -1, -1):
        h_prev = fw["h_prev"][t]
        f = fw["f"][t]
        R_h = R_hs[t] + R_h_from_next

        R_u, R_v = lrp_linear([fw["u"][t], fw["v"][t]], [I_d, I_d], None, fw["h"][t], R_h,
                              eps, bias_factor)
        one_minus_f = np.zeros(d)
        for k in range(d):
            one_minus_f[k] = 1.0 - f[k]
        R_1mf, R_n = lrp_gated(one_minus_f, fw["n"][t], R_u, gate, eps)
        R_fv, R_hv = lrp_gated(f, h_prev, R_v, gate, eps)
        R_af = R_1mf + R_fv
        R_an = R_n
        if reset_gate:
            R_xn, R_p = lrp_linear([x[t], fw["p"][t]], [WxT["n"], I_d], P["b"]["n"],
                                   fw["a_n"][t], R_an, eps, bias_factor)
            R_fp, R_m = lrp_gated(f, fw["m"][t], R_p, gate, eps)
            R_af = R_af + R_fp
            (R_hn,) = lrp_linear([h_prev], [WhT["n"]], P["bhn"], fw["m"][t], R_m, eps,
                                 bias_factor)
        else:
            R_xn, R_hn = lrp_linear([x[t], h_prev], [WxT["n"], WhT["n"]], P["b"]["n"],
                                    fw["a_n"][t], R_an, eps, bias_factor)
        R_xf, R_hf = lrp_linear([x[t], h_prev], [WxT["f"], WhT["f"]], P["b"]["f"], fw["a_f"][t],
                                R_af, eps, bias_factor)

        R_x[t] = R_xn + R_xf
        R_h_from_next = R_hv + R_hn + R_hf
    return R_x, R_h_from_next


# ---------------------------------------------------------------------------
# SimpleCell: h' = tanh(Wi x + b + Wh h [+ h])
# ---------------------------------------------------------------------------
def _simple_Wi(P):
    return _f64(P["Wi"] if "Wi" in P else P["Wx"])


def simple_forward(x, P, h0=None, residual=False):
    """Run the simple tanh cell over x (T, e). Returns {"h", "h_prev", "a", "h0"}."""
    x = _check_x(x)
    T = x.shape[0]
    d = _f64(P["b"]).shape[0]
    h_prev = np.zeros(d) if h0 is None else _f64(h0).copy()
    out = {k: np.zeros((T, d)) for k in ("h", "h_prev", "a")}
    out["h0"] = h_prev.copy()
    Wi = _simple_Wi(P)
    for t in range(T):
        out["h_prev"][t] = h_prev
        a = _matvec(Wi, x[t]) + _f64(P["b"]) + _matvec(P["Wh"], h_prev)
        if residual:
            a = a + h_prev
        h = np.zeros(d)
        for k in range(d):
            h[k] = math.tanh(a[k])
        out["a"][t] = a
        out["h"][t] = h
        h_prev = h
    return out


def simple_lrp(x, P, R_hs, *, eps=1e-3, bias_factor=0.0, gate="all", h0=None, residual=False):
    """LRP backward through the simple cell (``gate`` is accepted and unused: no gated products).

    Returns (R_x (T, e), R_h0 (d,)).
    """
    _check_gate(gate)
    x = _check_x(x)
    T, e = x.shape
    fw = simple_forward(x, P, h0=h0, residual=residual)
    d = fw["h"].shape[1]
    R_hs = _check_R(R_hs, T, d)
    WiT = _simple_Wi(P).T
    WhT = _f64(P["Wh"]).T
    I_d = _identity(d)

    R_x = np.zeros((T, e))
    R_h_from_next = np.zeros(d)
    for t in range(T - 1, -1, -1):
        h_prev = fw["h_prev"][t]
        R_a = R_hs[t] + R_h_from_next          # tanh: rule 2
        if residual:
            R_xt, R_hw, R_hi = lrp_linear([x[t], h_prev, h_prev], [WiT, WhT, I_d], P["b"],
                                          fw["a"][t], R_a, eps, bias_factor)
            R_h_from_next = R_hw + R_hi
        else:
            R_xt, R_h_from_next = lrp_linear([x[t], h_prev], [WiT, WhT], P["b"], fw["a"][t],
                                             R_a, eps, bias_factor)
        R_x[t] = R_xt
    return R_x, R_h_from_next
