"""Erasing a user from a served model's snapshot: the saved histories keep their row numbers (the
id is blanked), so the fitted components stay valid until the next fit."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from hyrec.data import Dataset
from hyrec.data.snapshot import save_snapshot


def without_user(ds: Dataset, row: int) -> Dataset:
    """``ds`` without the interactions of user ``row``, whose id is blanked ("" is rejected
    everywhere, so no request can name it) so that row numbers stay valid."""
    user_ids = ds.user_ids.copy()
    user_ids[row] = ""
    keep = ds.interactions.user != row
    return Dataset(ds.name, ds.items, user_ids, ds.interactions.take(keep), ds.skipped)


def replace_snapshot(ds: Dataset, folder: Path) -> None:
    """Rewrite a snapshot folder: write it beside the old one, then move each file over (each
    replacement is atomic). The side folder's name is unique, so replicas sharing a model folder
    never write into each other's."""
    tmp = folder.with_name(f"{folder.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
    save_snapshot(ds, tmp)
    for name in os.listdir(tmp):
        os.replace(tmp / name, folder / name)
    tmp.rmdir()
