"""retrieval: deterministic candidate generation and ranking over the encoders' scores.

:mod:`retrieval.items` (the :class:`~retrieval.items.ItemList` every stage passes on),
:mod:`retrieval.filters`, :mod:`retrieval.store` (the chromadb item store; its config in
:mod:`retrieval.store_config`, its input checks in :mod:`retrieval.store_inputs`, its process of
its own in :mod:`retrieval.store_client` and :mod:`retrieval.store_child`),
:mod:`retrieval.candidates` (with the faiss index in :mod:`retrieval.ann` and the candidate-only
score views of large catalogues in :mod:`retrieval.views`), :mod:`retrieval.features`,
:mod:`retrieval.ranker` (the learned head), :mod:`retrieval.hybrid` (its config in
:mod:`retrieval.hybrid_config`, its fit in :mod:`retrieval.hybrid_fit`, item-to-item in
:mod:`retrieval.similar_items`, catalogue growth in :mod:`retrieval.catalogue_growth`, its folder
on disk in :mod:`retrieval.saved`), the search in :mod:`retrieval.tuning` and
:mod:`retrieval.mmr`. Nothing here talks to an LLM.
"""
