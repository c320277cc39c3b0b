"""Data order for training and evaluation: a pure function of ``(seed, epoch)``, whatever the process count.

Why: resume = same run (:mod:`mfapr_training.engine`). Each sample's augmentation randomness is a pure function of
``(seed, epoch, index)`` (:class:`SeededDataset`) and an epoch's batches a ``DistributedSampler`` permutation of
``(seed, epoch)`` (:func:`epoch_batches`), so a run killed at any step continues with the same samples.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from mfapr_ros.core.errors import DataError

from .distributed import DistInfo


class SeededDataset(Dataset):
    """Wraps a dataset so each item's randomness depends only on ``(seed, epoch, index)``.

    Augmentations inside the wrapped dataset may use the global torch / numpy / python RNGs; around each
    ``__getitem__`` those are reseeded and then restored, so (a) an item is the same whether it is loaded in the
    main process or in any worker, before or after a resume, and (b) loading data never perturbs the RNG stream
    the model's dropout uses.
    """

    def __init__(self, inner: Any, seed: int) -> None:
        self.inner = inner
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.inner)

    def _seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + self.epoch * 7_919 + int(index)) % (2**31 - 1)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """A whole batch (the ``DataLoader`` asks for it this way). Where the inner dataset draws all of a sample's
        randomness from one torch generator (``BundleDataset.getitems``, also through a ``Subset``), each sample
        gets a generator seeded exactly as :meth:`__getitem__` seeds the global one — the same samples, with the
        tensor work done once per batch (demo batch: 44 → ~20 ms); otherwise item by item."""
        inner, index_map = self.inner, list(indices)
        if isinstance(inner, Subset):
            index_map = [inner.indices[i] for i in index_map]
            inner = inner.dataset
        getitems = getattr(inner, "getitems", None)
        if getitems is None:
            return [self[i] for i in indices]
        gens = [torch.Generator().manual_seed(self._seed(i)) for i in indices]
        with one_torch_thread():  # small tensors: one thread is faster (44 → 38 ms per demo batch, 107 with 2)
            return getitems(index_map, gens)

    def __getitem__(self, index: int) -> Any:
        s = self._seed(index)
        np_state, py_state = np.random.get_state(), random.getstate()
        with one_torch_thread(), torch.random.fork_rng(devices=[]):
            # the CPU generator only (what fork_rng(devices=[]) saves and restores): torch.manual_seed also seeds
            # every accelerator backend, and with none initialised each of those records the caller's stack
            # (traceback.format_stack, 3 per call) — ~0.5 ms per sample, 16 ms per demo step, for nothing
            torch.default_generator.manual_seed(s)
            np.random.seed(s)
            random.seed(s)
            try:
                return self.inner[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run a sample's tensor work on one intra-op thread, then restore the count.

    Why: a sample is a few small tensors (4 images of 64 px); with 2+ intra-op threads each op pays an OpenMP fork
    and barrier, and on a busy 2-core machine the spinning made colour jitter 30 ms per sample instead of 1.5 ms —
    the data path, not the model, set the step time. (DataLoader worker processes already use one thread.)
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, info: DistInfo, shuffle: bool = True
                  ) -> list[list[int]]:
    """This rank's batches of one epoch: a ``DistributedSampler`` permutation (seed + epoch), full batches only."""
    if n < batch_size * info.world_size:
        raise DataError(f"training set has {n} samples, fewer than one batch per process ({batch_size} × "
                        f"{info.world_size} ranks); lower train.batch_size or add data")
    sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    idx = list(sampler)
    return [idx[i:i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]


def make_loader(dataset: Dataset, batches: Sequence[Sequence[int]], num_workers: int, seed: int, device: str
                ) -> DataLoader:
    """A loader over explicit batches; its own generator keeps the global RNG untouched (the resume invariant)."""
    return DataLoader(dataset, batch_sampler=[list(b) for b in batches], num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), pin_memory=device.startswith("cuda"),
                      persistent_workers=False)


def iterate_once(dataset: Dataset, batch_size: int) -> Iterator[dict[str, Any]]:
    """All items of ``dataset`` in order, batched (used by evaluation)."""
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    yield from make_loader(dataset, batches, 0, 0, "cpu")
