"""retrieval: deterministic candidate generation and ranking over the encoders' scores.

:mod:`retrieval.items` (the :class:`~retrieval.items.ItemList` every stage passes on),
:mod:`retrieval.filters`, :mod:`retrieval.store` (the chromadb item store),
:mod:`retrieval.candidates`, :mod:`retrieval.features`, :mod:`retrieval.ranker` (the learned
head), :mod:`retrieval.hybrid` (and :mod:`retrieval.saved`, its folder on disk) and
:mod:`retrieval.mmr`. Nothing here talks to an LLM.
"""
