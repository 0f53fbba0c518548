"""The training stage's batches: which images each step sees, and how they are prepared.

One seed gives every attention variant the same data order and augmentation draws (the report
pairs runs by seed on that ground); data-parallel workers each take their share of the same
global batch.
"""

from __future__ import annotations

import numpy as np
import paddle

from pipeline.images import transforms


class GlobalBatchSampler(paddle.io.BatchSampler):
    """This worker's share of every global batch, as a DataLoader `batch_sampler`.

    Each epoch draws one permutation of the training set from (seed, epoch), the same on every
    worker, and cuts it into full global batches of `batch_size` (a last partial batch is
    dropped, as on one device). Worker `rank` of `world` takes the rank-th consecutive
    batch_size / world indices of each: the shares are disjoint and together are the global batch
    one device would train on. Call `set_epoch` before each epoch.
    """

    def __init__(self, num_images: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        # batch_size splits over `world`: pipeline.dag.config refuses settings where it does not.
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.rank, self.world, self.local = rank, world, batch_size // world
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_images // self.batch_size

    def global_batches(self) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_images)
        return [order[k * self.batch_size:(k + 1) * self.batch_size] for k in range(len(self))]

    def __iter__(self):
        start = self.rank * self.local
        for batch in self.global_batches():
            yield batch[start:start + self.local].tolist()


def training_batches(train_x: np.ndarray, train_y: np.ndarray, s: dict, dev: str, rank: int = 0, world: int = 1):
    """This worker's augmented (x, y) share of each global batch, one epoch after another (set
    the epoch with `.batch_sampler.set_epoch`): on the GPU itself when asked (uint8 set held
    there, whole batches augmented by tensor ops), else from a DataLoader."""
    sampler = GlobalBatchSampler(len(train_x), s["batch_size"], s["seed"], rank, world)
    if s["augment_on_device"] and dev == "gpu":
        return transforms.DeviceBatches(train_x, train_y, s["image_size"], sampler)
    workers = s["num_workers"]
    if workers:
        one_thread_per_loader_worker()
    paddle.io.reader.use_pinned_memory(s["pin_memory"] and dev == "gpu")
    return paddle.io.DataLoader(
        transforms.TrainDataset(train_x, train_y, s["image_size"]), batch_sampler=sampler, num_workers=workers,
        use_shared_memory=workers > 0, prefetch_factor=s["prefetch_batches"], persistent_workers=workers > 0,
    )


def one_thread_per_loader_worker() -> None:
    """Loader workers augment one image at a time with OpenCV, each on the one CPU the job
    declares for it (paddle_setup.training_cpus); OpenCV's own pool would add a thread per core to every
    worker. Set in the training process before the workers fork, which inherit it: a forked
    worker that starts or resizes OpenCV's pool itself can hang."""
    import cv2

    cv2.setNumThreads(1)


def validation_batches(images_u8: np.ndarray, labels: np.ndarray, size: int, batch_size: int) -> list:
    """The validation split resized and normalised once per run, as tensors on Paddle's device
    (10,000 images at 128 px take 2 GB there), instead of again on the CPU every epoch."""
    return [(paddle.to_tensor(x), paddle.to_tensor(y)) for x, y in transforms.test_batches(images_u8, labels, size,
                                                                                          batch_size)]
