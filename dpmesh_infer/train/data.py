"""Training data: persons of dpmesh datasets as augmented samples, in a reproducible order.

Determinism (what makes ``--resume`` exact): the order of epoch e of stage s is a permutation drawn
from a generator seeded with (seed, s, e); the augmentation of each sample uses its own numpy
generator seeded with (seed, s, e, position), so a sample looks the same whichever worker builds it
and whether or not the run was interrupted. No global RNG is touched by data loading.

Distribution: every optimiser step consumes one global batch of ``batch_size`` persons; process r of
W takes items [r·b, (r+1)·b) of it (b = batch_size / W / grad_accumulation per micro-batch). The last
incomplete global batch of an epoch is dropped.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from ..data.format import Dataset, DatasetError

__all__ = ["PersonRef", "PersonIndex", "TrainSamples", "epoch_order", "mix_seed", "step_batches", "steps_per_epoch"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PersonRef:
    dataset: int
    record: int
    person: int


class PersonIndex:
    """All usable persons of the configured datasets (``repeat`` times each), in a fixed order."""

    def __init__(self, specs, preprocess_cfg) -> None:
        from .samples import usable_person

        self.datasets: list[Dataset] = []
        self.refs: list[PersonRef] = []
        self.skipped: dict[str, int] = {}
        self.splits: list[str] = [spec.split for spec in specs]
        for d, spec in enumerate(specs):
            ds = Dataset(Path(spec.path).expanduser())
            self.datasets.append(ds)
            refs = []
            for rec in ds.records(spec.split):
                if not ds.image_path(rec).is_file():
                    self.skipped["missing image"] = self.skipped.get("missing image", 0) + len(rec.persons)
                    continue
                for p, person in enumerate(rec.persons):
                    if usable_person(person, rec.width, rec.height, preprocess_cfg):
                        refs.append(PersonRef(d, rec.index, p))
                    else:
                        self.skipped["no usable box"] = self.skipped.get("no usable box", 0) + 1
            self.refs += refs * spec.repeat
        if not self.refs:
            raise DatasetError("no usable person in the training data (" + ", ".join(
                f"{s.path}:{s.split}" for s in specs) + f"); skipped: {self.skipped or 'none'}")

    def __len__(self) -> int:
        return len(self.refs)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SeedSequence-based, stable across platforms)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
               .astype(np.uint64).dot(np.array([1 << 32, 1], dtype=np.uint64)) & ((1 << 63) - 1))


def epoch_order(n: int, seed: int, stage: int, epoch: int) -> np.ndarray:
    """The permutation of the n persons used in (stage, epoch)."""
    return np.random.default_rng(mix_seed(seed, stage, epoch, 0x5EED)).permutation(n)


def step_batches(n: int, *, seed: int, stage: int, epoch: int, batch_size: int, rank: int, world: int,
                 micro_batches: int, start_step: int, max_steps: int = 0):
    """Yield, for each optimiser step from ``start_step``, the list of micro-batches of this process:
    each micro-batch a list of (person position, sample seed)."""
    order = epoch_order(n, seed, stage, epoch)
    steps = steps_per_epoch(n, batch_size, max_steps)
    per_rank = batch_size // world
    micro = per_rank // micro_batches
    for step in range(start_step, steps):
        base = step * batch_size + rank * per_rank
        items = [(int(order[base + i]), mix_seed(seed, stage, epoch, base + i)) for i in range(per_rank)]
        yield [items[m * micro:(m + 1) * micro] for m in range(micro_batches)]


def steps_per_epoch(n: int, batch_size: int, max_steps: int = 0) -> int:
    """Optimiser steps of one epoch: whole global batches of the n persons, capped at max_steps (0 = no cap)."""
    steps = n // batch_size
    return min(steps, max_steps) if max_steps else steps


class TrainSamples(torch.utils.data.Dataset):
    """Map-style dataset: key (position, sample seed, student) -> dict of tensors (see
    :func:`dpmesh_infer.train.samples.make_training_sample`)."""

    def __init__(self, index: PersonIndex, augment_cfg, preprocess_cfg) -> None:
        self.index, self.augment_cfg, self.preprocess_cfg = index, augment_cfg, preprocess_cfg

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        from ..errors import ImageError
        from ..images import load_image
        from .samples import make_training_sample

        pos, seed = key
        ref = self.index.refs[pos]
        ds = self.index.datasets[ref.dataset]
        rec = ds.records(self.index.splits[ref.dataset])[ref.record]
        path = ds.image_path(rec)
        try:
            image = load_image(path)
        except ImageError as e:
            raise DatasetError(f"training image {path} (record {rec.index} of {ds.root}) cannot be read: {e}") from e
        try:
            sample = make_training_sample(image, rec, ref.person, np.random.default_rng(seed), self.augment_cfg,
                                          self.preprocess_cfg, train=True)
        except ValueError as e:  # e.g. the image's size differs from its record's
            raise DatasetError(f"training image {path} (record {rec.index} of {ds.root}): {e}") from e
        return {k: torch.as_tensor(np.asarray(v)) for k, v in sample.items()}


def collate_samples(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
