"""Dataset representation, loaders for the common formats, and evaluation splits."""

from .dataset import (
    DataError,
    Dataset,
    Interactions,
    Item,
    attribute_genres,
    attribute_year,
    check_attributes,
    interaction_matrix,
    k_core,
    to_implicit,
)
from .sources import DataUnavailableError, load_dataset, resolve_data_dir
from .splits import EvalTask, History, Split, leave_one_out, temporal_split

__all__ = [
    "DataError",
    "DataUnavailableError",
    "Dataset",
    "EvalTask",
    "History",
    "Interactions",
    "Item",
    "attribute_genres",
    "attribute_year",
    "check_attributes",
    "Split",
    "interaction_matrix",
    "k_core",
    "leave_one_out",
    "load_dataset",
    "resolve_data_dir",
    "temporal_split",
    "to_implicit",
]
