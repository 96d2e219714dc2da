"""Slow, literal NumPy reference ("oracle") for LRP through attention and pooling heads.

Written directly from the written rules R1-R5 (identity rule for element-wise activations, epsilon
rule for linear maps, the attention-pooling rule with the gate split, AttnLRP's softmax rule and the
epsilon rule for sum / mean pooling and for multiplications by constants). Everything is float64 and
written as explicit Python loops over units, steps and batch rows, one formula per line, so that
each function is an obvious transcription of its rule and independent of any vectorised code.

Conventions
-----------
* sign(z) = +1 where z >= 0 else -1 (sign(0) = +1); zs = z + eps * sign(z); bf = bias_factor.
* Linear maps use the ``a @ W`` convention, ``W.shape == a.shape + out_shape``; all axes of ``a``
  are contracted, N = a.size:
      R_i = sum_j (a_i w_ij + bf * (b_j + eps*s_j) / N) / zs_j * R_j
* Attention pooling, per output unit k (R3): P_tk = alpha_t h_tk, z_k = sum_t P_tk,
  N_k = #{t : P_tk != 0};  R_P_tk = P_tk / zs_k R_k (+ bf eps s_k / zs_k R_k / N_k if P_tk != 0),
  then the gate rule splits R_P_tk between alpha_t (gate) and h_tk (signal).
* Softmax (R4, AttnLRP Prop. 3.1): R_s_i = s_i (R_alpha_i - alpha_i sum_j R_alpha_j); 0 at -inf.
* Sum pooling (R5): as attention pooling with the summands a_tk; a multiplication / division by a
  constant (one input) gives R_a = (z + bf eps s) / zs * R with z the product.
* Heads are explained one batch row at a time (``*_batch`` functions loop over rows).
"""

import math

import numpy as np

GATE_RULES = ("all", "half", "prop", "abs")


# ---------------------------------------------------------------------------
# Scalars
# ---------------------------------------------------------------------------
def _sgn(v):
    """+1.0 where v >= 0 else -1.0 (Python float)."""
    return 1.0 if v >= 0 else -1.0


def _tanh(v):
    return math.tanh(v)


def _relu(v):
    return v if v > 0 else 0.0


# ---------------------------------------------------------------------------
# Forward helpers (loops)
# ---------------------------------------------------------------------------
def dense_forward(a, W, b=None):
    """z_j = sum_i a_i W_ij + b_j, with a flattened (C order) and W reshaped to (a.size, m)."""
    a = np.asarray(a, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    out_shape = W.shape[a.ndim:]
    if W.shape[:a.ndim] != a.shape:
        raise ValueError("W.shape must start with a.shape: %s vs %s" % (W.shape, a.shape))
    n = a.size
    m = int(np.prod(out_shape)) if out_shape else 1
    al = a.reshape(n).tolist()
    Wl = W.reshape(n, m).tolist()
    bl = [0.0] * m if b is None else np.asarray(b, dtype=np.float64).reshape(m).tolist()
    z = np.zeros(m)
    for j in range(m):
        acc = bl[j]
        for i in range(n):
            acc += al[i] * Wl[i][j]
        z[j] = acc
    return z.reshape(out_shape)


def softmax_forward(s):
    """alpha_t = exp(s_t - max) / sum_u exp(s_u - max) over a 1-D vector (-inf entries give 0)."""
    sl = np.asarray(s, dtype=np.float64).tolist()
    mx = max(sl)
    e = [math.exp(v - mx) for v in sl]
    tot = 0.0
    for v in e:
        tot += v
    return np.array([v / tot for v in e])


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------
def lrp_dense(a, W, b, R_out, eps, bias_factor):
    """Epsilon rule (R2) through z = a @ W + b for ONE row.

    a: any shape (all axes contracted, N = a.size); W: a.shape + out_shape; b: out_shape or None;
    R_out: out_shape. Returns R_a shaped like a.
    """
    a = np.asarray(a, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    out_shape = W.shape[a.ndim:]
    n = a.size
    m = int(np.prod(out_shape)) if out_shape else 1
    al = a.reshape(n).tolist()
    Wl = W.reshape(n, m).tolist()
    bl = [0.0] * m if b is None else np.asarray(b, dtype=np.float64).reshape(m).tolist()
    Rl = np.asarray(R_out, dtype=np.float64).reshape(m).tolist()
    z = dense_forward(a, W, b).reshape(m).tolist()
    N = n
    s = [_sgn(z[j]) for j in range(m)]
    zs = [z[j] + eps * s[j] for j in range(m)]
    share = [bias_factor * (bl[j] + eps * s[j]) / N for j in range(m)]
    R = np.zeros(n)
    for i in range(n):
        acc = 0.0
        for j in range(m):
            acc += (al[i] * Wl[i][j] + share[j]) / zs[j] * Rl[j]
        R[i] = acc
    return R.reshape(a.shape)


def lrp_scale(z, R_out, eps, bias_factor):
    """Unit with a single input (a * const, a / const, a * mask), element-wise:
    R_a = z / zs * R + bf * eps * s / zs * R, with z the unit's output (the product)."""
    z = np.asarray(z, dtype=np.float64)
    R_out = np.asarray(R_out, dtype=np.float64)
    R = np.zeros(z.shape)
    for idx in np.ndindex(z.shape):
        zv = float(z[idx])
        s = _sgn(zv)
        zs = zv + eps * s
        R[idx] = zv / zs * float(R_out[idx]) + bias_factor * eps * s / zs * float(R_out[idx])
    return R


def gate_split(g, sig, R, rule, eps):
    """Split the relevance R of one product g * sig (scalars): returns (R_gate, R_signal)."""
    if rule == "all":
        return 0.0, R
    if rule == "half":
        return R / 2.0, R / 2.0
    if rule == "prop":
        u = g + sig + eps * _sgn(g + sig)
        return g / u * R, sig / u * R
    if rule == "abs":
        u = abs(g) + abs(sig) + eps
        return abs(g) / u * R, abs(sig) / u * R
    raise ValueError("unknown gate rule %r" % (rule,))


def _lrp_sum_of_products(P, R_out, eps, bias_factor):
    """Epsilon rule over the summands P[t, k] of z_k = sum_t P[t, k] (the bias-free stabiliser share
    goes to the non-zero summands only). Returns R_P (T, D)."""
    P = np.asarray(P, dtype=np.float64)
    T, D = P.shape
    Rl = np.asarray(R_out, dtype=np.float64).tolist()
    R_P = np.zeros((T, D))
    for k in range(D):
        z = 0.0
        for t in range(T):
            z += float(P[t, k])
        s = _sgn(z)
        zs = z + eps * s
        n_nz = 0
        for t in range(T):
            if float(P[t, k]) != 0.0:
                n_nz += 1
        for t in range(T):
            p = float(P[t, k])
            r = p / zs * Rl[k]
            if p != 0.0 and n_nz > 0:
                r += bias_factor * eps * s / zs * Rl[k] / n_nz
            R_P[t, k] = r
    return R_P


def lrp_sum_pool(a, R_out, eps, bias_factor):
    """Sum pooling z_k = sum_t a[t, k] (R5). a: (T, D), R_out: (D,). Returns R_a (T, D)."""
    return _lrp_sum_of_products(a, R_out, eps, bias_factor)


def lrp_attention_pool(alpha, h, R_ctx, eps, bias_factor, gate):
    """Attention pooling context_k = sum_t alpha_t h[t, k] (R3) for ONE row.

    alpha: (T,), h: (T, D), R_ctx: (D,). Returns (R_alpha (T,), R_h (T, D)).
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    T, D = h.shape
    P = np.zeros((T, D))
    for t in range(T):
        for k in range(D):
            P[t, k] = float(alpha[t]) * float(h[t, k])
    R_P = _lrp_sum_of_products(P, R_ctx, eps, bias_factor)
    R_alpha = np.zeros(T)
    R_h = np.zeros((T, D))
    for t in range(T):
        acc = 0.0
        for k in range(D):
            rg, rs = gate_split(float(alpha[t]), float(h[t, k]), float(R_P[t, k]), gate, eps)
            acc += rg
            R_h[t, k] = rs
        R_alpha[t] = acc
    return R_alpha, R_h


def lrp_softmax(s, alpha, R_alpha):
    """AttnLRP softmax rule (R4) for ONE row: R_s_i = s_i (R_alpha_i - alpha_i sum_j R_alpha_j),
    0 where s_i = -inf."""
    sl = np.asarray(s, dtype=np.float64).tolist()
    al = np.asarray(alpha, dtype=np.float64).tolist()
    Rl = np.asarray(R_alpha, dtype=np.float64).tolist()
    tot = 0.0
    for v in Rl:
        tot += v
    R = np.zeros(len(sl))
    for i in range(len(sl)):
        if sl[i] == -math.inf:
            R[i] = 0.0
        else:
            R[i] = sl[i] * (Rl[i] - al[i] * tot)
    return R


def _seed(logits, target):
    R = np.zeros(len(logits))
    R[target] = float(logits[target])
    return R


# ---------------------------------------------------------------------------
# Composite (a)/(b): MLP-attention pooling head
# ---------------------------------------------------------------------------
def attention_head_forward(h, mask, P, mask_value=-math.inf, score_transform=None):
    """ONE row. h: (T, D) input, mask: (T,) bools. P: dict of float64 weights:
      optional "Wg" (D, G1, G2) and "bg" (G1, G2): sig_t = tanh(h_t @ Wg + bg) flattened (DenseGeneral);
        without them sig = h.
      "W1" (Ds, H), "w2" (H,): s_t = tanh(sig_t @ W1) @ w2;
      s_t -> score_transform(s) (optional, numpy, on the (T,) vector) -> where(mask, s, mask_value)
      -> alpha = softmax -> ctx = sum_t alpha_t sig_t -> y = tanh(ctx @ W3 + b3) -> logits = y @ W4.
    Returns a dict of the intermediates."""
    h = np.asarray(h, dtype=np.float64)
    T = h.shape[0]
    f = {"h": h}
    if "Wg" in P:
        sig = np.zeros((T, P["Wg"].shape[1] * P["Wg"].shape[2]))
        pre = []
        for t in range(T):
            zt = dense_forward(h[t], P["Wg"], P["bg"]).reshape(-1)
            pre.append(zt)
            for k in range(zt.shape[0]):
                sig[t, k] = _tanh(float(zt[k]))
        f["g_pre"] = np.array(pre)
    else:
        sig = h.copy()
    f["sig"] = sig
    u = np.zeros((T, P["W1"].shape[1]))
    v = np.zeros_like(u)
    s = np.zeros(T)
    for t in range(T):
        u[t] = dense_forward(sig[t], P["W1"])
        for j in range(u.shape[1]):
            v[t, j] = _tanh(float(u[t, j]))
        s[t] = float(dense_forward(v[t], P["w2"]))
    f["u"], f["v"], f["s_raw"] = u, v, s
    if score_transform is not None:
        s = np.asarray(score_transform(s.copy()), dtype=np.float64)
    f["s"] = s
    sm = np.zeros(T)
    for t in range(T):
        sm[t] = float(s[t]) if bool(mask[t]) else mask_value
    f["s_masked"] = sm
    alpha = softmax_forward(sm)
    f["alpha"] = alpha
    Ds = sig.shape[1]
    ctx = np.zeros(Ds)
    for k in range(Ds):
        acc = 0.0
        for t in range(T):
            acc += float(alpha[t]) * float(sig[t, k])
        ctx[k] = acc
    f["ctx"] = ctx
    y1 = dense_forward(ctx, P["W3"], P["b3"])
    y2 = np.array([_tanh(float(v_)) for v_ in y1])
    f["y1"], f["y2"] = y1, y2
    f["logits"] = dense_forward(y2, P["W4"])
    return f


def attention_head_lrp(h, mask, P, target, *, eps=1e-3, bias_factor=0.0, gate="all",
                       mask_value=-math.inf, score_transform=None):
    """LRP of logit ``target`` of :func:`attention_head_forward` for ONE row.
    Returns (R_h (T, D), logits (C,), parts) where parts holds the pooling / scoring shares."""
    if gate not in GATE_RULES:
        raise ValueError("unknown gate rule %r" % (gate,))
    f = attention_head_forward(h, mask, P, mask_value, score_transform)
    T = f["h"].shape[0]
    R_out = _seed(f["logits"], target)
    R_y2 = lrp_dense(f["y2"], P["W4"], None, R_out, eps, bias_factor)      # Dense(C), no bias
    R_y1 = R_y2                                                            # tanh: identity
    R_ctx = lrp_dense(f["ctx"], P["W3"], P["b3"], R_y1, eps, bias_factor)  # Dense(H2) + bias
    R_alpha, R_sig_pool = lrp_attention_pool(f["alpha"], f["sig"], R_ctx, eps, bias_factor, gate)

    R_sig_score = np.zeros_like(f["sig"])
    has_score_relevance = any(float(r) != 0.0 for r in R_alpha)
    if has_score_relevance:
        if score_transform is not None:
            raise NotImplementedError("no rule for the score transform (only gate='all')")
        R_sm = lrp_softmax(f["s_masked"], f["alpha"], R_alpha)
        for t in range(T):
            R_s_t = float(R_sm[t]) if bool(mask[t]) else 0.0  # where: selection
            R_v = lrp_dense(f["v"][t], P["w2"], None, np.array(R_s_t), eps, bias_factor)
            R_u = R_v                                                      # tanh: identity
            R_sig_score[t] = lrp_dense(f["sig"][t], P["W1"], None, R_u, eps, bias_factor)
    R_sig = R_sig_pool + R_sig_score
    if "Wg" in P:
        R_h = np.zeros_like(f["h"])
        for t in range(T):
            R_pre = R_sig[t].reshape(P["bg"].shape)                         # tanh: identity
            R_h[t] = lrp_dense(f["h"][t], P["Wg"], P["bg"], R_pre, eps, bias_factor)
    else:
        R_h = R_sig
    parts = {"R_alpha": R_alpha, "R_pool": R_sig_pool, "R_score": R_sig_score, "R_ctx": R_ctx}
    return R_h, f["logits"], parts


def attention_head_lrp_batch(h, masks, P, targets, **kw):
    """Loop :func:`attention_head_lrp` over batch rows. Returns (R (B, T, D), logits (B, C))."""
    h = np.asarray(h, dtype=np.float64)
    R = np.zeros(h.shape)
    logits = []
    for r in range(h.shape[0]):
        R[r], lg, _ = attention_head_lrp(h[r], masks[r], P, int(targets[r]), **kw)
        logits.append(lg)
    return R, np.array(logits)


# ---------------------------------------------------------------------------
# Composite (c): sum / mean pooling + Dense + relu + Dense
# ---------------------------------------------------------------------------
POOLS = ("mask_mul_div", "where_sum_div", "mean", "sum")


def pooled_mlp_forward(h, mask, length, P, pool):
    """ONE row. pool:
      "mask_mul_div":  a = h * mask[:, None]; q = a.sum(0) / length
      "where_sum_div": a = where(mask[:, None], h, 0); q = a.sum(0) / length
      "mean":          a = h; q = a.sum(0) / T
      "sum":           a = h; q = a.sum(0)
    then y = q @ W1 + b1, r = relu(y), logits = r @ W2 + b2."""
    h = np.asarray(h, dtype=np.float64)
    T, D = h.shape
    a = np.zeros((T, D))
    for t in range(T):
        for k in range(D):
            if pool == "mask_mul_div":
                a[t, k] = float(h[t, k]) * (1.0 if bool(mask[t]) else 0.0)
            elif pool == "where_sum_div":
                a[t, k] = float(h[t, k]) if bool(mask[t]) else 0.0
            else:
                a[t, k] = float(h[t, k])
    zsum = np.zeros(D)
    for k in range(D):
        acc = 0.0
        for t in range(T):
            acc += float(a[t, k])
        zsum[k] = acc
    if pool in ("mask_mul_div", "where_sum_div"):
        q = np.array([float(zsum[k]) / float(length) for k in range(D)])
    elif pool == "mean":
        q = np.array([float(zsum[k]) / T for k in range(D)])
    else:
        q = zsum.copy()
    y = dense_forward(q, P["W1"], P["b1"])
    r = np.array([_relu(float(v)) for v in y])
    logits = dense_forward(r, P["W2"], P["b2"])
    return {"a": a, "zsum": zsum, "q": q, "y": y, "r": r, "logits": logits}


def pooled_mlp_lrp(h, mask, length, P, target, pool, *, eps=1e-3, bias_factor=0.0):
    """LRP of logit ``target`` of :func:`pooled_mlp_forward` for ONE row: (R_h (T, D), logits)."""
    f = pooled_mlp_forward(h, mask, length, P, pool)
    T, D = f["a"].shape
    R_out = _seed(f["logits"], target)
    R_r = lrp_dense(f["r"], P["W2"], P["b2"], R_out, eps, bias_factor)
    R_y = R_r                                                     # relu: identity
    R_q = lrp_dense(f["q"], P["W1"], P["b1"], R_y, eps, bias_factor)
    if pool == "sum":
        R_z = R_q
    else:                                                          # division by a constant
        R_z = lrp_scale(f["q"], R_q, eps, bias_factor)
    R_a = lrp_sum_pool(f["a"], R_z, eps, bias_factor)
    R_h = np.zeros((T, D))
    for t in range(T):
        for k in range(D):
            if pool == "mask_mul_div":                             # h * mask: one-input unit
                R_h[t, k] = float(lrp_scale(np.array([f["a"][t, k]]), np.array([R_a[t, k]]),
                                            eps, bias_factor)[0])
            elif pool == "where_sum_div":                          # selection
                R_h[t, k] = float(R_a[t, k]) if bool(mask[t]) else 0.0
            else:
                R_h[t, k] = float(R_a[t, k])
    return R_h, f["logits"]


def pooled_mlp_lrp_batch(h, masks, lengths, P, targets, pool, **kw):
    h = np.asarray(h, dtype=np.float64)
    R = np.zeros(h.shape)
    logits = []
    for r in range(h.shape[0]):
        R[r], lg = pooled_mlp_lrp(h[r], masks[r], lengths[r], P, int(targets[r]), pool, **kw)
        logits.append(lg)
    return R, np.array(logits)


# ---------------------------------------------------------------------------
# Composite: einsum with two contracted axes, 'btd,tdk->bk' + b -> tanh -> @ V
# ---------------------------------------------------------------------------
def einsum2_lrp(h, P, target, *, eps=1e-3, bias_factor=0.0):
    """ONE row: y = einsum('td,tdk->k', h, W) + b (N = T * D), r = tanh(y), logits = r @ V."""
    h = np.asarray(h, dtype=np.float64)
    y = dense_forward(h, P["W"], P["b"])
    r = np.array([_tanh(float(v)) for v in y])
    logits = dense_forward(r, P["V"])
    R_out = _seed(logits, target)
    R_r = lrp_dense(r, P["V"], None, R_out, eps, bias_factor)
    R_h = lrp_dense(h, P["W"], P["b"], R_r, eps, bias_factor)
    return R_h, logits
