"""Slow, literal NumPy reference ("oracle") for LRP on LSTMs.

Written directly from the written specification of the rules (epsilon rule for
linear maps, identity rule for element-wise activations, epsilon rule over the
two summands of the LSTM cell accumulator, and the "all"/"half"/"prop"/"abs"
rules for gated products). Everything is float64 and written as explicit
Python loops (over lower unit i and upper unit j for linear maps, over
elements for element-wise rules) so that each function is an obvious
transcription of its formula and independent of any vectorised implementation.

Conventions
-----------
* sign(z) = +1 where z >= 0 else -1 (so sign(0) = +1).
* Linear maps use the ``a @ W`` convention: z_j = sum_k sum_i a^(k)_i W^(k)_ij + b_j.
* Epsilon rule (rule 1), with N = total number of lower units over all inputs:
      R_i = sum_j (a_i w_ij + bias_factor * (b_j + eps*s_j) / N) / (z_j + eps*s_j) * R_j
* LSTM parameters (oracle layout): {"Wx": {q: (d, e)}, "Wh": {q: (d, d)}, "b": {q: (d,)}}
  for the gates q of the variant; a_q = Wx[q] @ x_t + Wh[q] @ h_{t-1} + b[q].
"""

import math

import numpy as np

GATE_RULES = ("all", "half", "prop", "abs")
VARIANTS = ("standard", "no_forget", "no_output", "rudder")


# ---------------------------------------------------------------------------
# Basic rules
# ---------------------------------------------------------------------------
def sign(z):
    """+1 where z >= 0 else -1, element-wise (sign(0) = +1). Returns float64."""
    z = np.asarray(z, dtype=np.float64)
    return np.where(z >= 0, 1.0, -1.0)


def _sgn(v):
    """Scalar version of sign (Python float in, Python float out)."""
    return 1.0 if v >= 0 else -1.0


def lrp_linear(inputs, weights, bias, z, R_out, eps, bias_factor):
    """Epsilon-LRP through a linear map fed by one or several lower layers.

    inputs: list of 1-D arrays a^(k) of shape (n_k,).
    weights: list of (n_k, m) arrays, so that z_j = sum_k sum_i a^(k)_i W^(k)_ij + b_j.
    bias: (m,) or None (None = zero bias).
    z: (m,) full pre-activation, or None to compute it from inputs/weights/bias.
    R_out: (m,) relevance of the upper units.
    Returns a list of arrays shaped like ``inputs``.  N = sum of n_k.
    """
    if len(inputs) != len(weights):
        raise ValueError("inputs and weights must have the same length")
    R_out = np.asarray(R_out, dtype=np.float64)
    if R_out.ndim != 1:
        raise ValueError("R_out must be 1-D")
    m = R_out.shape[0]
    acts = []
    mats = []
    for a, W in zip(inputs, weights):
        a = np.asarray(a, dtype=np.float64)
        W = np.asarray(W, dtype=np.float64)
        if a.ndim != 1 or W.ndim != 2 or W.shape != (a.shape[0], m):
            raise ValueError(
                "input of shape %s does not fit weight of shape %s (m=%d)"
                % (a.shape, W.shape, m))
        acts.append(a.tolist())
        mats.append(W.tolist())
    N = sum(len(a) for a in acts)

    if bias is None:
        b = [0.0] * m
    else:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (m,):
            raise ValueError("bias must have shape (m,)")
        b = bias.tolist()

    if z is None:
        zz = []
        for j in range(m):
            zj = b[j]
            for a, W in zip(acts, mats):
                for i in range(len(a)):
                    zj += a[i] * W[i][j]
            zz.append(zj)
    else:
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (m,):
            raise ValueError("z must have shape (m,)")
        zz = z.tolist()

    R = R_out.tolist()

    # Per upper unit j: s_j, the stabilised denominator, and the bias share
    # given to each of the N lower units.
    s = [_sgn(zz[j]) for j in range(m)]
    denom = [zz[j] + eps * s[j] for j in range(m)]
    bias_share = [bias_factor * (b[j] + eps * s[j]) / N for j in range(m)]

    out = []
    for a, W in zip(acts, mats):
        n = len(a)
        R_low = np.zeros(n, dtype=np.float64)
        for i in range(n):
            acc = 0.0
            for j in range(m):
                numer = a[i] * W[i][j] + bias_share[j]
                acc += numer / denom[j] * R[j]
            R_low[i] = acc
        out.append(R_low)
    return out


def lrp_gated(gate, signal, R, rule, eps):
    """Relevance split for a gated product p = gate * signal (element-wise).

    rule "all":  R_signal = R, R_gate = 0
    rule "half": R_gate = R_signal = R / 2
    rule "prop": u = gate + signal + eps*sign(gate + signal);
                 R_gate = gate/u * R, R_signal = signal/u * R
    rule "abs":  D = |gate| + |signal| + eps;
                 R_gate = |gate|/D * R, R_signal = |signal|/D * R
    Returns (R_gate, R_signal).
    """
    if rule not in GATE_RULES:
        raise ValueError("unknown gate rule %r" % (rule,))
    gate = np.asarray(gate, dtype=np.float64)
    signal = np.asarray(signal, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    if not (gate.shape == signal.shape == R.shape):
        raise ValueError("gate, signal and R must have the same shape")
    R_gate = np.zeros(R.shape, dtype=np.float64)
    R_signal = np.zeros(R.shape, dtype=np.float64)
    for idx in np.ndindex(R.shape):
        gv = float(gate[idx])
        sv = float(signal[idx])
        rv = float(R[idx])
        if rule == "all":
            R_gate[idx] = 0.0
            R_signal[idx] = rv
        elif rule == "half":
            R_gate[idx] = rv / 2.0
            R_signal[idx] = rv / 2.0
        elif rule == "prop":
            u = gv + sv + eps * _sgn(gv + sv)
            R_gate[idx] = gv / u * rv
            R_signal[idx] = sv / u * rv
        else:  # "abs"
            D = abs(gv) + abs(sv) + eps
            R_gate[idx] = abs(gv) / D * rv
            R_signal[idx] = abs(sv) / D * rv
    return R_gate, R_signal


# ---------------------------------------------------------------------------
# LSTM forward
# ---------------------------------------------------------------------------
def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def _gates_of(variant):
    if variant == "standard":
        return ("i", "f", "g", "o")
    if variant == "no_forget":
        return ("i", "g", "o")
    if variant == "no_output":
        return ("i", "f", "g")
    if variant == "rudder":
        return ("i", "g")
    raise ValueError("unknown variant %r" % (variant,))


def _feeds(variant, q):
    """Which layers feed gate q: returns (uses_x, uses_h)."""
    if variant == "rudder":
        if q == "g":
            return True, False
        if q == "i":
            return False, True
    return True, True


def _dims(params, variant):
    """Return (d, e) from the parameter dict."""
    d = np.asarray(params["b"]["g"]).shape[0]
    e = None
    for q in _gates_of(variant):
        uses_x, _ = _feeds(variant, q)
        if uses_x:
            e = np.asarray(params["Wx"][q]).shape[1]
            break
    return d, e


def _preactivation(params, variant, q, x_t, h_prev):
    """a_q = Wx[q] @ x_t + Wh[q] @ h_prev + b[q], as explicit loops
    (only over the layers that feed gate q in this variant)."""
    uses_x, uses_h = _feeds(variant, q)
    b = np.asarray(params["b"][q], dtype=np.float64)
    d = b.shape[0]
    Wx = np.asarray(params["Wx"][q], dtype=np.float64).tolist() if uses_x else None
    Wh = np.asarray(params["Wh"][q], dtype=np.float64).tolist() if uses_h else None
    xl = x_t.tolist()
    hl = h_prev.tolist()
    a = np.zeros(d, dtype=np.float64)
    for j in range(d):
        acc = float(b[j])
        if uses_x:
            for i in range(len(xl)):
                acc += Wx[j][i] * xl[i]
        if uses_h:
            for i in range(len(hl)):
                acc += Wh[j][i] * hl[i]
        a[j] = acc
    return a


def lstm_forward(x, params, variant="standard", h0=None, c0=None):
    """Run the LSTM over x (T, e).

    Returns a dict with
      "h", "c": (T, d) hidden and cell states,
      "h_prev", "c_prev": (T, d) the states entering step t (h_{t-1}, c_{t-1}),
      "a": {q: (T, d)} gate pre-activations,
      "gate": {q: (T, d)} gate activations (sigmoid for i/f/o, tanh for g),
      "tanh_c": (T, d) tanh(c_t) (only meaningful for variants that use it),
      "variant", "h0", "c0".
    """
    if variant not in VARIANTS:
        raise ValueError("unknown variant %r" % (variant,))
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("x must be (T, e)")
    T = x.shape[0]
    d, _ = _dims(params, variant)
    gates = _gates_of(variant)
    h_prev = np.zeros(d) if h0 is None else np.asarray(h0, dtype=np.float64).copy()
    c_prev = np.zeros(d) if c0 is None else np.asarray(c0, dtype=np.float64).copy()
    h0_used = h_prev.copy()
    c0_used = c_prev.copy()

    H = np.zeros((T, d))
    C = np.zeros((T, d))
    Hp = np.zeros((T, d))
    Cp = np.zeros((T, d))
    TC = np.zeros((T, d))
    A = {q: np.zeros((T, d)) for q in gates}
    G = {q: np.zeros((T, d)) for q in gates}

    for t in range(T):
        Hp[t] = h_prev
        Cp[t] = c_prev
        for q in gates:
            a_q = _preactivation(params, variant, q, x[t], h_prev)
            A[q][t] = a_q
            for k in range(d):
                if q == "g":
                    G[q][t, k] = math.tanh(a_q[k])
                else:
                    G[q][t, k] = _sigmoid(a_q[k])
        c = np.zeros(d)
        h = np.zeros(d)
        for k in range(d):
            ig = G["i"][t, k] * G["g"][t, k]
            if variant in ("standard", "no_output"):
                c[k] = G["f"][t, k] * c_prev[k] + ig
            else:  # no_forget, rudder: f = 1
                c[k] = c_prev[k] + ig
            TC[t, k] = math.tanh(c[k])
            if variant in ("standard", "no_forget"):
                h[k] = G["o"][t, k] * TC[t, k]
            elif variant == "no_output":
                h[k] = TC[t, k]
            else:  # rudder: linear cell output
                h[k] = c[k]
        H[t] = h
        C[t] = c
        h_prev = h
        c_prev = c

    return {"h": H, "c": C, "h_prev": Hp, "c_prev": Cp, "a": A, "gate": G,
            "tanh_c": TC, "variant": variant, "h0": h0_used, "c0": c0_used}


# ---------------------------------------------------------------------------
# LSTM LRP backward
# ---------------------------------------------------------------------------
def lstm_lrp(x, params, R_hs, R_c_last=None, *, eps=1e-3, bias_factor=0.0,
             gate="all", variant="standard", h0=None, c0=None):
    """LRP backward through one LSTM direction reading x[0], ..., x[T-1].

    R_hs: (T, d) relevance arriving at each h_t from outside the layer.
    R_c_last: (d,) relevance arriving at the final c_{T-1} from outside (default zeros).
    Returns (R_x (T, e), R_h0 (d,), R_c0 (d,)).
    """
    if gate not in GATE_RULES:
        raise ValueError("unknown gate rule %r" % (gate,))
    x = np.asarray(x, dtype=np.float64)
    T, e = x.shape
    fw = lstm_forward(x, params, variant=variant, h0=h0, c0=c0)
    d = fw["h"].shape[1]
    gates = _gates_of(variant)
    R_hs = np.asarray(R_hs, dtype=np.float64)
    if R_hs.shape != (T, d):
        raise ValueError("R_hs must be (T, d)")
    R_c_last = np.zeros(d) if R_c_last is None else np.asarray(R_c_last, dtype=np.float64)

    # identity-stacked weights of the accumulator: lower units
    # [summand1_0..summand1_{d-1}, summand2_0..summand2_{d-1}] -> upper unit k
    I_d = np.zeros((d, d))
    for k in range(d):
        I_d[k, k] = 1.0

    R_x = np.zeros((T, e))
    R_h_from_next = np.zeros(d)   # relevance at h_t from step t+1's linear maps
    R_c_from_next = np.zeros(d)   # relevance at c_t from step t+1's accumulator

    for t in range(T - 1, -1, -1):
        G = {q: fw["gate"][q][t] for q in gates}
        A = {q: fw["a"][q][t] for q in gates}
        c_t = fw["c"][t]
        c_prev = fw["c_prev"][t]
        h_prev = fw["h_prev"][t]
        R_pre = {q: np.zeros(d) for q in gates}  # relevance at each pre-activation

        # total relevance at h_t
        R_h = R_hs[t] + R_h_from_next

        # h_t -> c_t
        if variant in ("standard", "no_forget"):
            R_o, R_tanhc = lrp_gated(G["o"], fw["tanh_c"][t], R_h, gate, eps)
            R_pre["o"] = R_pre["o"] + R_o          # sigmoid: identity rule
            R_c_from_h = R_tanhc                     # tanh: identity rule
        else:  # no_output (h = tanh(c)) and rudder (h = c): identity
            R_c_from_h = R_h.copy()

        # total relevance at c_t
        R_c = R_c_from_h + R_c_from_next
        if t == T - 1:
            R_c = R_c + R_c_last

        # accumulator c_t = summand1 + summand2 (dense epsilon rule, N = 2d)
        if variant in ("standard", "no_output"):
            summand1 = G["f"] * c_prev
        else:
            summand1 = c_prev.copy()
        summand2 = G["i"] * G["g"]
        R_s1, R_s2 = lrp_linear([summand1, summand2], [I_d, I_d], None, c_t,
                                R_c, eps, bias_factor)

        # summand 1
        if variant in ("standard", "no_output"):
            R_f, R_cprev = lrp_gated(G["f"], c_prev, R_s1, gate, eps)
            R_pre["f"] = R_pre["f"] + R_f
        else:
            R_cprev = R_s1

        # summand 2 = i * g
        R_i, R_g = lrp_gated(G["i"], G["g"], R_s2, gate, eps)
        R_pre["i"] = R_pre["i"] + R_i
        R_pre["g"] = R_pre["g"] + R_g

        # pre-activations -> x_t and h_{t-1} (rule 1 per gate group)
        R_hprev = np.zeros(d)
        for q in gates:
            uses_x, uses_h = _feeds(variant, q)
            ins, Ws, which = [], [], []
            if uses_x:
                ins.append(x[t])
                Ws.append(np.asarray(params["Wx"][q], dtype=np.float64).T)
                which.append("x")
            if uses_h:
                ins.append(h_prev)
                Ws.append(np.asarray(params["Wh"][q], dtype=np.float64).T)
                which.append("h")
            parts = lrp_linear(ins, Ws, params["b"][q], A[q], R_pre[q],
                               eps, bias_factor)
            for w, Rp in zip(which, parts):
                if w == "x":
                    R_x[t] = R_x[t] + Rp
                else:
                    R_hprev = R_hprev + Rp

        R_h_from_next = R_hprev
        R_c_from_next = R_cprev

    return R_x, R_h_from_next, R_c_from_next


# ---------------------------------------------------------------------------
# Reference bidirectional model (row blocks i, g, f, o)
# ---------------------------------------------------------------------------
_BLOCK_ORDER = ("i", "g", "f", "o")


def _reference_to_params(weights, side):
    """Slice the reference (4d, .) layout into the oracle's per-gate dict."""
    Wxh = np.asarray(weights["Wxh_" + side], dtype=np.float64)
    Whh = np.asarray(weights["Whh_" + side], dtype=np.float64)
    bias = (np.asarray(weights["bxh_" + side], dtype=np.float64)
            + np.asarray(weights["bhh_" + side], dtype=np.float64))
    d = Whh.shape[1]
    if Wxh.shape[0] != 4 * d or Whh.shape[0] != 4 * d or bias.shape != (4 * d,):
        raise ValueError("reference weights must have 4d rows")
    params = {"Wx": {}, "Wh": {}, "b": {}}
    for n, q in enumerate(_BLOCK_ORDER):
        params["Wx"][q] = Wxh[n * d:(n + 1) * d].copy()
        params["Wh"][q] = Whh[n * d:(n + 1) * d].copy()
        params["b"][q] = bias[n * d:(n + 1) * d].copy()
    return params


def _readout(weights, h_left, h_right):
    """scores_c = sum_k Why_Left[c, k] h_left[k] + sum_k Why_Right[c, k] h_right[k]."""
    WL = np.asarray(weights["Why_Left"], dtype=np.float64)
    WR = np.asarray(weights["Why_Right"], dtype=np.float64)
    C = WL.shape[0]
    scores = np.zeros(C)
    for c in range(C):
        acc = 0.0
        for k in range(h_left.shape[0]):
            acc += WL[c, k] * h_left[k]
        for k in range(h_right.shape[0]):
            acc += WR[c, k] * h_right[k]
        scores[c] = acc
    return scores


def _bilstm_states(weights, x):
    x = np.asarray(x, dtype=np.float64)
    pL = _reference_to_params(weights, "Left")
    pR = _reference_to_params(weights, "Right")
    fL = lstm_forward(x, pL, variant="standard")
    fR = lstm_forward(x[::-1], pR, variant="standard")
    return pL, pR, fL["h"][-1], fR["h"][-1]


def arras_bilstm_forward(weights, x):
    """Scores (C,) of the reference bidirectional LSTM on x (T, e)."""
    _, _, hL, hR = _bilstm_states(weights, x)
    return _readout(weights, hL, hR)


def arras_bilstm_lrp(weights, x, target, *, eps=1e-3, bias_factor=0.0, gate="all"):
    """LRP for the reference bidirectional LSTM.

    Returns (R_x (T, e), R_init (float), scores (C,)), where R_init is the total
    relevance reaching the four initial states (h and c of both directions).
    """
    x = np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    pL, pR, hL, hR = _bilstm_states(weights, x)
    scores = _readout(weights, hL, hR)
    C = scores.shape[0]
    d = hL.shape[0]

    R_out = np.zeros(C)
    R_out[target] = scores[target]
    WL = np.asarray(weights["Why_Left"], dtype=np.float64)
    WR = np.asarray(weights["Why_Right"], dtype=np.float64)
    R_hL, R_hR = lrp_linear([hL, hR], [WL.T, WR.T], None, scores, R_out,
                            eps, bias_factor)

    R_hs_L = np.zeros((T, d))
    R_hs_L[T - 1] = R_hL
    R_xL, R_h0L, R_c0L = lstm_lrp(x, pL, R_hs_L, None, eps=eps,
                                  bias_factor=bias_factor, gate=gate,
                                  variant="standard")

    R_hs_R = np.zeros((T, d))
    R_hs_R[T - 1] = R_hR  # last step of the reversed pass = after reading x[0]
    R_xR_rev, R_h0R, R_c0R = lstm_lrp(x[::-1], pR, R_hs_R, None, eps=eps,
                                      bias_factor=bias_factor, gate=gate,
                                      variant="standard")
    R_xR = R_xR_rev[::-1]

    R_x = R_xL + R_xR
    R_init = float(R_h0L.sum() + R_c0L.sum() + R_h0R.sum() + R_c0R.sum())
    return R_x, R_init, scores
