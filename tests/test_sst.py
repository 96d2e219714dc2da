"""SST-5 end to end: smoke runs of examples/sst_sentiment.py and scripts/sst_deletion.py (--quick).

Both scripts run once, in one subprocess (one JAX start-up; the deletion script reuses the example's
compiled forward pass), on a small subset: 1,024 training sentences of <= 16 tokens, one epoch per
model (paper, ours, attention BiLSTM), then word deletion on 64 test sentences. The data is read from
../shared/data (never copied); without it the tests are skipped.

Real checks on the outputs: with nothing deleted the deletion curves equal the models' own accuracy on
the sentences selected (100 % of the correctly classified, 0 % of the misclassified); on the paper's
model (the released LSTM with one epoch of trained embeddings) deleting the words LRP ranks highest
for the true class lowers the accuracy more than deleting random words, and deleting the lowest-ranked
ones fixes more misclassified sentences than random deletion; on the attention BiLSTM (explained
unmodified, strict) the first holds too, LRP with bias_factor=1 conserves and padded tokens get 0.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SHARED

NEEDED = [SHARED / "sst" / f"stsa.fine.{s}" for s in ("train", "dev", "test")] + [
    SHARED / "sst_bilstm_li2016" / "weights.npz", SHARED / "sst_bilstm_li2016" / "vocab.txt"]
MISSING = [str(p) for p in NEEDED if not p.exists()]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"SST data not found in shared/ ({', '.join(MISSING)})")

METHODS = ["LRP (gate=all)", "LRP (gate=half)", "gradient", "sensitivity", "gradient x input",
           "integrated gradients", "occlusion", "random"]
MODELS = ("paper", "ours", "attn")

DRIVER = """
import sys
sys.path[:0] = ["examples", "scripts"]
import sst_sentiment, sst_deletion
models, out = sys.argv[1], sys.argv[2]
assert sst_sentiment.main(["--quick", "--out", models]) == 0
assert sst_deletion.main(["--quick", "--models", models, "--out", out]) == 0
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("sst")
    models, out = base / "models", base / "deletion"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("JAX_ENABLE_X64", None)
    env.pop("XLA_FLAGS", None)
    res = subprocess.run([sys.executable, "-c", DRIVER, str(models), str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return models, out, res.stdout


def test_example_quick_trains_both_models_and_writes_heatmaps(runs):
    models, _, stdout = runs
    cfg = json.loads((models / "config.json").read_text())
    for name in MODELS:
        r = cfg["results"][name]
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["train_seconds"] > 0
        assert f"{name}  " in stdout
    with np.load(models / "ours.npz") as f:
        assert f["head/kernel"].shape == (2 * cfg["hidden"], 5)             # no output bias
        assert "head/bias" not in f.files
        assert f["embedding/embedding"].shape == (cfg["vocab"], cfg["embed"])
    assert np.load(models / "paper_embeddings.npy").shape == (cfg["vocab"], 60)
    with np.load(models / "attn.npz") as f:                                 # the Flax SST-2 architecture
        assert f["embedding"].shape == (cfg["vocab"], cfg["embed"])          # a self.param table
        for d in ("forward_lstm", "backward_lstm"):
            assert f[f"{d}/OptimizedLSTMCell_0/ii/kernel"].shape == (cfg["embed"], cfg["hidden"])
        assert f["attn_hidden/kernel"].shape == (2 * cfg["hidden"], cfg["attn_mlp"])
        assert f["attn_score/kernel"].shape == (cfg["attn_mlp"], 1)
        assert f["head_out/kernel"].shape == (cfg["attn_mlp"], 5)
        assert not any(k.endswith("bias") for k in f.files if k.startswith(("attn_", "head_out")))
    page = (models / "heatmaps.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "reference BiLSTM" in page and "Flax BiLSTM" in page
    assert "attention BiLSTM" in page and "attention weights" in page
    assert "test accuracy (5 classes" in stdout


def test_attention_model_explained_from_ids_conserves_with_zero_on_padding(runs):
    """The attention model, unmodified, strict, from token ids (table[ids] lookup included): same
    relevance as on the embedded input; bias_factor=1 conserves; padded tokens get exactly 0."""
    models, _, _ = runs
    cfg = json.loads((models / "config.json").read_text())
    assert cfg["attn_ids_vs_embedded_max_diff"] < 1e-5
    cons = cfg["attn_conservation"]
    assert cons["n"] >= 5 and cons["n_padded_positions"] > 0
    assert cons["max_abs_absorbed_over_score"] < 1e-4
    assert cons["max_abs_relevance_on_padding"] == 0.0


def test_deletion_quick_outputs(runs):
    _, out, stdout = runs
    res = json.loads((out / "sst_deletion.json").read_text())
    assert res["n_sentences"] == 64 and res["target"] == "true class"
    table = (out / "sst_deletion.md").read_text(encoding="utf-8")
    for m in METHODS:
        assert table.count(f"| {m} |") == 3, m                           # one row per model
    assert table.count("| attention weights |") == 1                    # the attention model only
    png = (out / "sst_deletion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
    for name, r in res["models"].items():
        assert r["n_correct"] + r["n_misclassified"] == 64
        assert r["accuracy"] == pytest.approx(r["n_correct"] / 64)
        for order in ("most", "least"):
            if r["n_correct" if order == "most" else "n_misclassified"]:
                extra = ["attention weights"] if name == "attn" else []
                assert sorted(r["curves"][order]) == sorted(METHODS + extra)
                for c in r["curves"][order].values():
                    assert len(c) == 6 and all(0.0 <= v <= 1.0 for v in c)
    assert "steepest first" in stdout


def test_deletion_curve_at_k0_is_the_models_accuracy(runs):
    """Nothing deleted: every method's curve starts at the model's own verdict on the selected
    sentences (correct ones 100 %, misclassified ones 0 %), i.e. at the accuracy it was selected by."""
    _, out, _ = runs
    res = json.loads((out / "sst_deletion.json").read_text())
    for r in res["models"].values():
        for c in r["curves"]["most"].values():
            assert c[0] == 1.0
        for c in r["curves"]["least"].values():
            assert c[0] == 0.0


def test_lrp_beats_random_deletion_on_the_paper_model(runs):
    _, out, _ = runs
    cur = json.loads((out / "sst_deletion.json").read_text())["models"]["paper"]["curves"]
    mean = lambda order, m: float(np.mean(cur[order][m][1:]))
    # correctly classified: deleting the most relevant words hurts more than deleting random ones
    assert mean("most", "LRP (gate=all)") < mean("most", "random") - 0.1
    # misclassified: deleting the least relevant words (evidence against the label) fixes more
    assert mean("least", "LRP (gate=all)") > mean("least", "random") + 0.1


def test_lrp_beats_random_deletion_on_the_attention_model(runs):
    _, out, _ = runs
    r = json.loads((out / "sst_deletion.json").read_text())["models"]["attn"]
    assert r["n_correct"] >= 5
    cur = r["curves"]
    mean = lambda order, m: float(np.mean(cur[order][m][1:]))
    assert mean("most", "LRP (gate=all)") < mean("most", "random") - 0.1


def test_per_sentence_outcomes_average_to_the_curves_and_feed_the_seed_summary(runs, capsys):
    """sst_deletion.py also writes every sentence's outcome per k (for paired comparisons over seeds);
    their means are the curves, and scripts/sst_seeds.py reads them (here: one run given twice)."""
    _, out, _ = runs
    res = json.loads((out / "sst_deletion.json").read_text())["models"]
    with np.load(out / "sst_deletion_outcomes.npz") as f:
        for model, r in res.items():
            for order, curves in r["curves"].items():
                rows = f[f"{model}/{order}/rows"]
                for method, curve in curves.items():
                    per = f[f"{model}/{order}/{method}"]
                    assert per.shape == (len(curve), len(rows))
                    np.testing.assert_allclose(per.mean(axis=1), curve, atol=1e-12)
    sys.path.insert(0, str(ROOT / "scripts"))
    import sst_seeds
    assert sst_seeds.main([str(out), str(out)]) == 0
    text = capsys.readouterr().out
    assert "LRP-all -" in text and "| paper |" in text
