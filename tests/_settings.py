"""Settings shared by tests (imported as ``_settings``: pytest puts tests/ on sys.path)."""

TINY_CV = [
    "model.hidden=8",
    "model.heads=2",
    "model.layers=1",
    "train.epochs=1",
    "eval.folds=2",
    "eval.bootstrap=10",
    "eval.baselines=[]",
]
"""Overrides for a seconds-long ``graphmed train``: a tiny model, one epoch, 2 folds."""
