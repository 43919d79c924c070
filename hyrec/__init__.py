"""hyrec: an LLM-augmented hybrid recommender.

Package layout (dependency direction ``agent → retrieval → encoders → hyrec``; ``eval`` uses them
all and
nothing uses ``eval``):

* :mod:`hyrec.data` — the dataset type, loaders, splits; :mod:`hyrec.metrics` — ranking metrics;
* :mod:`encoders` — scorers (popularity, item-kNN, implicit ALS/BPR, text, LightGCN, SASRec);
* :mod:`eval` — the offline evaluation harness; :mod:`hyrec.cli` — the ``hyrec`` command.
"""

__version__ = "0.1.0"
