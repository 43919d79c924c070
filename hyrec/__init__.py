"""hyrec: the ground floor of the hybrid recommender. It imports nothing from the other packages.

* :mod:`hyrec.data` — the dataset type, loaders, splits and snapshots;
* :mod:`hyrec.metrics` — ranking and beyond-accuracy metrics;
* :mod:`hyrec.threads` — one BLAS thread per process.

The floors above: ``encoders → hyrec``, ``retrieval → encoders``, ``agent → retrieval, prompts``;
``eval`` uses them all and nothing uses ``eval``. See docs/architecture.md.
"""

__version__ = "0.1.0"
