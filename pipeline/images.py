"""Image pipelines: the post's training augmentation chain and the deterministic test transform."""

from __future__ import annotations

import cv2
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet statistics, as in the post
STD = np.array([0.229, 0.224, 0.225], np.float32)


def train_transform(size: int):
    """The post's chain: resize (130 at 128 px), colour jitter, random resized crop, flip, rotate.

    The post also lists PaddleX MixupImage(): on a plain image it does nothing (it needs a
    detection sample dict with a `mixup` key), so it is left out; the report says so.
    """
    import paddle.vision.transforms as T

    return T.Compose([
        T.Resize((round(size * 130 / 128),) * 2),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        T.RandomResizedCrop(size, scale=(0.6, 1.0)),
        T.RandomHorizontalFlip(0.5),
        T.RandomRotation(20),
        T.ToTensor(),
        T.Normalize(mean=MEAN.tolist(), std=STD.tolist()),
    ])


def test_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (bilinear), scale to [0, 1], normalise; NHWC uint8 -> NCHW float32.

    Equal to the post's test transform (Resize, ToTensor, Normalize with the cv2 backend),
    but done on a whole batch at once.
    """
    resized = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR) for im in images])
    return ((resized.astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2).copy()


def test_batches(images: np.ndarray, labels: np.ndarray, size: int, batch_size: int):
    for start in range(0, len(images), batch_size):
        end = start + batch_size
        yield test_batch(images[start:end], size), labels[start:end]


def denormalise(batch: np.ndarray) -> np.ndarray:
    """NCHW normalised model input -> NHWC RGB in [0, 1], for display."""
    return np.clip(batch.transpose(0, 2, 3, 1) * STD + MEAN, 0, 1)


class TrainDataset:
    """uint8 NHWC images through the augmentation chain; a paddle.io.Dataset by duck typing."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int):
        self.images, self.labels, self.transform = images, labels, train_transform(size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]
