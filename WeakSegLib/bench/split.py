"""The benchmark's train/test split: by group (patient, ``Case.group``), seeded, never overlapping."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from WeakSegLib.bench.config import BenchConfig
from WeakSegLib.data.dataset import Dataset, load_dataset, manifest_case_id
from WeakSegLib.utils import read_json_object


def entry_group(entry: dict) -> str:
    """The split unit of a manifest entry: its ``group`` (patient), else its case id."""
    return str(entry.get("group") or manifest_case_id(entry))


def read_split_groups(path: str | os.PathLike, part: str = "test") -> list[str]:
    """The groups (patients) of one ``part`` ("train" or "test") of a split file
    ``{"train": [...], "test": [...]}`` (one clear error when the file has no such list)."""
    split = read_json_object(path, f"split file '{path}'")
    if not isinstance(split.get(part), list):
        raise ValueError(f"split file '{path}' must hold a \"{part}\" list of groups (patients).")
    return [str(g) for g in split[part]]


def load_groups(path: str | os.PathLike, groups: Sequence[str], **options) -> Dataset:
    """:func:`~WeakSegLib.data.dataset.load_dataset` of only the cases of ``groups`` (the other cases'
    files are never read); ``options`` go to ``load_dataset``."""
    wanted = {str(g) for g in groups}
    return load_dataset(path, case_filter=lambda entry: entry_group(entry) in wanted, **options)


def split_groups(groups: Sequence[str], test_groups: int | None = None, train_groups: int | None = None,
                 test_fraction: float = 0.25, seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded split of group names (patients) into ``(train, test)``, each sorted, never overlapping.

    ``test_groups`` (a count) wins over ``test_fraction``; ``train_groups`` caps the training groups
    (default: all the others).
    """
    unique = sorted({str(g) for g in groups})
    n = len(unique)
    n_test = int(test_groups) if test_groups is not None else max(1, int(round(test_fraction * n)))
    n_train = int(train_groups) if train_groups is not None else n - n_test
    if n_test < 1 or n_train < 1 or n_test + n_train > n:
        raise ValueError(f"Cannot split {n} group(s) into {n_train} for training and {n_test} for testing; "
                         f"lower --train-groups / --test-groups (or --test-fraction).")
    order = np.random.default_rng(seed).permutation(n)
    test = sorted(unique[i] for i in order[:n_test])
    train = sorted(unique[i] for i in order[n_test:n_test + n_train])
    return train, test


def split_case_ids(entries: Sequence[dict], config: BenchConfig) -> tuple[list[str], list[str]]:
    """``(train case ids, test case ids)`` of the manifest entries: the config's explicit split, else
    :func:`split_groups` with its counts, fraction and seed; at most ``max_cases`` on each side."""
    groups = [entry_group(e) for e in entries]
    if config.split is not None:
        missing = sorted((set(config.split["train"]) | set(config.split["test"])) - set(groups))
        if missing:
            raise ValueError(f"The split names group(s) not in the dataset: {missing[:5]}.")
        train_groups, test_groups = sorted(config.split["train"]), sorted(config.split["test"])
    else:
        train_groups, test_groups = split_groups(groups, config.test_groups, config.train_groups,
                                                 config.test_fraction, config.seed)
    train_ids = [manifest_case_id(e) for e in entries if entry_group(e) in set(train_groups)]
    test_ids = [manifest_case_id(e) for e in entries if entry_group(e) in set(test_groups)]
    if config.max_cases is not None:
        train_ids, test_ids = train_ids[:config.max_cases], test_ids[:config.max_cases]
    return train_ids, test_ids
