"""Old import path of the Arras et al. (2017) reference BiLSTM; it now lives in :mod:`lrpjax.importers`
with every other weight import. ``lrpjax.interop.from_arras_bilstm`` keeps working."""
from lrpjax.importers import ARRAS_KEYS, from_arras_bilstm, load_arras_weights

__all__ = ["ARRAS_KEYS", "from_arras_bilstm", "load_arras_weights"]
