"""Image pipelines: the post's training augmentation chain, a faster equivalent, and the test transform.

Training augmentation comes in three forms that draw their random parameters from one sampler
(`sample_augmentations`), so their distributions are the same:
- `blog_train_transform(size)`: the post's chain of paddle.vision transforms (the reference);
- `fast_train_transform(size)` / `TrainDataset`: the same cv2 operations on uint8 data, each done
  once and without paddle tensors: equal output for equal parameters, several times faster per
  core (`python -m pipeline bench`, data path);
- `augment_batch_on_device` / `DeviceBatches`: whole batches with paddle tensor ops, for a GPU.

What paddle 3.3.1's cv2 backend does in the post's chain (read from its source):
- Resize to R x R, R = round(size * 130 / 128), bilinear.
- ColorJitter: brightness, contrast, saturation (and a hue step that does nothing) in a random
  order (random.shuffle). Factors b, c, f ~ U(0.8, 1.2). Brightness is the lookup table
  clip(v * b); contrast is clip((v - 74) * c + 74), a fixed pivot of 74, not the image mean;
  saturation draws a second factor alpha ~ U(max(0, 1 - f), 1 + f), so alpha spans [0, 2.2], and
  blends with cv2's BGR grey (on RGB data: 0.114 R + 0.587 G + 0.299 B) in float32. Every step
  truncates to uint8.
- RandomResizedCrop: up to 10 draws of area fraction ~ U(0.6, 1) and log aspect ratio
  ~ U(log 3/4, log 4/3); the first box that fits wins, at a uniform integer position; otherwise
  the whole image. Then bilinear resize of the box to size x size.
- Flip with probability 0.5. Rotation by ~ U(-20, 20) degrees about (size/2, size/2),
  nearest neighbour, same size (no expand), black fill.
- ToTensor (/255) and Normalize with the ImageNet mean and std.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet statistics, as in the post
STD = np.array([0.229, 0.224, 0.225], np.float32)

# The post's augmentation settings
JITTER = 0.2  # brightness, contrast and saturation factors ~ U(1 - 0.2, 1 + 0.2)
CONTRAST_PIVOT = 74  # paddle's cv2 adjust_contrast pivots on this constant
CROP_SCALE = (0.6, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
FLIP_PROB = 0.5
DEGREES = 20
JITTER_OPS = ("brightness", "contrast", "saturation")  # the codes 0, 1, 2 of Augmentation.order

# uint8 value -> normalised float32, per channel: to tensor (/255) and Normalize in one lookup
_NORMALISE = [((np.arange(256, dtype=np.float32) / 255 - m) / s).astype(np.float32)
              for m, s in zip(MEAN, STD, strict=True)]
_LEVELS = np.arange(256, dtype=np.float64)  # paddle builds its lookup tables in float64


def resized_size(size: int) -> int:
    """Side of the square the chain first resizes to: 130 at 128 px (Python's round: 32 -> 32)."""
    return round(size * 130 / 128)


def blog_train_transform(size: int):
    """The post's chain: resize (130 at 128 px), colour jitter, random resized crop, flip, rotate.

    The reference for the faster paths; returns a CHW float32 paddle Tensor per image. The post
    also lists PaddleX MixupImage(): on a plain image it does nothing (it needs a detection sample
    dict with a `mixup` key), so it is left out; the report says so.
    """
    import paddle.vision.transforms as T

    return T.Compose([
        T.Resize((resized_size(size),) * 2),
        T.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
        T.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO),
        T.RandomHorizontalFlip(FLIP_PROB),
        T.RandomRotation(DEGREES),
        T.ToTensor(),
        T.Normalize(mean=MEAN.tolist(), std=STD.tolist()),
    ])


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random parameters of the post's chain: for one image (scalars) or n images (arrays).

    The crop box (top, left, height, width) is in the R x R resized image, as RandomResizedCrop
    draws it. angle: degrees, counter-clockwise. saturation: the blend factor alpha actually
    applied. order: the jitter steps in the order applied, codes into JITTER_OPS.
    """

    top: np.ndarray
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray
    flip: np.ndarray
    angle: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    saturation: np.ndarray
    order: np.ndarray  # shape (n, 3)

    def __len__(self) -> int:
        return len(self.top)

    def rows(self) -> list[Augmentation]:
        """One Augmentation of Python scalars per image (Python floats keep float32 arithmetic
        in float32, as paddle's Python-float factors do)."""
        columns = [getattr(self, f.name).tolist() for f in dataclasses.fields(self)]
        return [Augmentation(*values[:-1], tuple(values[-1])) for values in zip(*columns, strict=True)]


# Every draw is a function of UNIFORMS numbers ~ U(0, 1): 2 per crop attempt and 11 for the rest.
UNIFORMS = 2 * CROP_ATTEMPTS + 11
_LOG_RATIO = tuple(np.log(CROP_RATIO).tolist())


def _between(u, low, high):
    """Uniform(s) in [0, 1) -> [low, high); one formula for arrays and floats."""
    return low + (high - low) * u


def sample_augmentations(rng, n: int, size: int) -> Augmentation:
    """n independent draws of the chain's random parameters, with paddle's distributions.

    rng: a numpy Generator, or the np.random module, i.e. numpy's global state (which
    np.random.seed fixes, the training stage checkpoints, and paddle's DataLoader re-seeds in each
    worker). `sample_augmentation` computes the same function of the same uniforms, per image.
    """
    side, k = resized_size(size), CROP_ATTEMPTS
    u = rng.random((n, UNIFORMS))
    # RandomResizedCrop: the first of k boxes that fits, else the whole (square) image.
    area = _between(u[:, :k], *CROP_SCALE) * side * side
    ratio = np.exp(_between(u[:, k:2 * k], *_LOG_RATIO))
    boxes = np.rint(np.sqrt([area * ratio, area / ratio]))  # (w, h); rint rounds half to even, as round()
    fits = ((boxes >= 1) & (boxes <= side)).all(axis=0)
    rows, first = np.arange(n), fits.argmax(axis=1)
    width, height = np.where(fits[rows, first], boxes[:, rows, first], side).astype(np.int64)
    # random.randint(0, side - h), both ends included
    top, left = (u[:, 2 * k:2 * k + 2].T * (side - np.stack([height, width]) + 1)).astype(np.int64)
    flip = u[:, 2 * k + 2] < FLIP_PROB
    angle = _between(u[:, 2 * k + 3], -DEGREES, DEGREES)
    brightness, contrast, factor = _between(u[:, 2 * k + 4:2 * k + 7], 1 - JITTER, 1 + JITTER).T
    # paddle's cv2 adjust_saturation draws its blend factor a second time around the first.
    saturation = _between(u[:, 2 * k + 7], np.maximum(0, 1 - factor), 1 + factor)
    order = u[:, 2 * k + 8:].argsort(axis=1)  # a uniform random permutation, like random.shuffle
    return Augmentation(top, left, height, width, flip, angle, brightness, contrast, saturation, order)


def sample_augmentation(rng, size: int) -> Augmentation:
    """One draw, as `sample_augmentations(rng, 1, size).rows()[0]` but in plain Python: numpy's
    fixed cost per call would make sampling as slow as augmenting."""
    side, k = resized_size(size), CROP_ATTEMPTS
    u = rng.random(UNIFORMS).tolist()
    for attempt in range(k):
        area = _between(u[attempt], *CROP_SCALE) * side * side
        ratio = math.exp(_between(u[k + attempt], *_LOG_RATIO))
        width, height = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 1 <= width <= side and 1 <= height <= side:
            break
    else:
        width = height = side
    top, left = int(u[2 * k] * (side - height + 1)), int(u[2 * k + 1] * (side - width + 1))
    brightness, contrast, factor = (_between(x, 1 - JITTER, 1 + JITTER) for x in u[2 * k + 4:2 * k + 7])
    return Augmentation(top, left, height, width, u[2 * k + 2] < FLIP_PROB, _between(u[2 * k + 3], -DEGREES, DEGREES),
                        brightness, contrast, _between(u[2 * k + 7], max(0, 1 - factor), 1 + factor),
                        tuple(sorted(range(3), key=u[2 * k + 8:].__getitem__)))


def jitter(image: np.ndarray, aug: Augmentation) -> np.ndarray:
    """ColorJitter with fixed factors, computed as paddle's cv2 backend does (uint8 in and out)."""
    for op in aug.order:
        if op == 0:
            image = cv2.LUT(image, np.clip(_LEVELS * aug.brightness, 0, 255).astype(np.uint8))
        elif op == 1:
            table = (_LEVELS - CONTRAST_PIVOT) * aug.contrast + CONTRAST_PIVOT
            image = cv2.LUT(image, np.clip(table, 0, 255).astype(np.uint8))
        else:
            # paddle: (img * a + grey * (1 - a)).clip(0, 255).astype(uint8) in float32, grey from
            # cv2's BGR weights on RGB data. Same float32 operations here, in place and on a 3-channel
            # grey: numpy's broadcast of a 1-channel grey and its temporaries cost several times more.
            pixels = image.astype(np.float32)
            grey = cv2.cvtColor(cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2RGB)
            np.multiply(pixels, aug.saturation, out=pixels)
            np.multiply(grey, 1 - aug.saturation, out=grey)
            np.clip(np.add(pixels, grey, out=pixels), 0, 255, out=pixels)
            image = pixels.astype(np.uint8)
    return image


def apply_augmentation(image: np.ndarray, aug: Augmentation, size: int) -> np.ndarray:
    """The chain with one image's fixed parameters (`sample_augmentation`): HWC uint8 -> CHW float32.

    The reference's cv2 operations in its order, each done once and without paddle tensors: the
    output equals the post's chain given the same parameters.
    """
    side = resized_size(size)
    image = jitter(cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR), aug)
    box = image[aug.top:aug.top + aug.height, aug.left:aug.left + aug.width]
    image = cv2.resize(box, (size, size), interpolation=cv2.INTER_LINEAR)
    if aug.flip:
        image = cv2.flip(image, 1)
    rotation = cv2.getRotationMatrix2D((size / 2, size / 2), aug.angle, 1)
    image = cv2.warpAffine(image, rotation, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
    out = np.empty((3, size, size), np.float32)
    for c, plane in enumerate(cv2.split(image)):  # normalise and go HWC -> CHW in one pass
        cv2.LUT(plane, _NORMALISE[c], dst=out[c])
    return out


class fast_train_transform:  # lower case: used like a function, as blog_train_transform
    """Per-image callable, HWC uint8 -> CHW float32: random parameters from `sample_augmentation`,
    applied by `apply_augmentation`.

    Without `rng` the draws come from numpy's global state, as the post's chain draws from
    Python's and numpy's: np.random.seed fixes them, the training stage's checkpoint of numpy's
    state makes a resumed run repeat them, and paddle's DataLoader gives each worker its own.
    """

    def __init__(self, size: int, rng: np.random.Generator | None = None):
        self.size, self.rng = size, rng

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return apply_augmentation(image, sample_augmentation(self.rng or np.random, self.size), self.size)


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
    """uint8 NHWC images through the augmentation; a paddle.io.Dataset by duck typing.

    `transform` (image -> CHW float32) defaults to `fast_train_transform(size)`; e.g.
    blog_train_transform(size) gives the post's own chain (paddle Tensors, several times slower).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, transform=None):
        self.images, self.labels = images, labels
        self.transform = transform or fast_train_transform(size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


# ---- On-device batch augmentation (training with augment_on_device on a GPU) ---------------------

def _pixel_from_normalised(side: int) -> np.ndarray:
    """3x3 map from grid_sample's normalised coordinates to pixel coordinates (align_corners=False:
    pixel centres at integers, image edges at -0.5 and side - 0.5)."""
    return np.array([[side / 2, 0, side / 2 - 0.5], [0, side / 2, side / 2 - 0.5], [0, 0, 1]])


def _device_numbers(p: Augmentation, n: int, size: int) -> list[np.ndarray]:
    """Every number the device needs to augment one batch, computed on the host: per image the
    jitter factors and order, the crop-and-flip sampling grid's coordinates and the rotation's
    affine map; and the normalisation constants."""
    side = resized_size(size)
    # Crop box and flip: separable pixel coordinates, clamped to the box, normalised for grid_sample.
    out = np.arange(size) + 0.5
    top, left = np.asarray(p.top, np.float64)[:, None], np.asarray(p.left, np.float64)[:, None]
    height, width = np.asarray(p.height, np.float64)[:, None], np.asarray(p.width, np.float64)[:, None]
    xs = np.where(np.asarray(p.flip)[:, None], size - out, out)
    u = np.clip(xs * width / size - 0.5, 0, width - 1) + left
    v = np.clip(out * height / size - 0.5, 0, height - 1) + top
    # Rotation: cv2.getRotationMatrix2D is the forward map; grid_sample wants output -> input.
    to_pixel = _pixel_from_normalised(size)
    to_normal = np.linalg.inv(to_pixel)
    thetas = []
    for angle in np.asarray(p.angle, np.float64):
        forward = np.vstack([cv2.getRotationMatrix2D((size / 2, size / 2), float(angle), 1), [0, 0, 1]])
        thetas.append((to_normal @ np.linalg.inv(forward) @ to_pixel)[:2])
    per_image = [np.asarray(values, np.float64).reshape(n, 1, 1, 1) for values in (p.brightness, p.contrast,
                                                                                   p.saturation)]
    order = [np.asarray(p.order)[:, step].reshape(n, 1, 1, 1) for step in range(3)]
    return [*per_image, *order, (2 * u + 1) / side - 1, (2 * v + 1) / side - 1, np.array(thetas),
            MEAN.reshape(1, 3, 1, 1), STD.reshape(1, 3, 1, 1)]


def _to_device(arrays: list[np.ndarray], place) -> list:
    """`arrays` as float32 tensors on `place`, sent in one host-to-device copy and cut there."""
    import paddle

    flat = paddle.to_tensor(np.concatenate([np.asarray(a, np.float32).ravel() for a in arrays]), place=place)
    sizes = [int(np.prod(a.shape)) for a in arrays]
    return [part.reshape(list(a.shape)) for part, a in zip(paddle.split(flat, sizes), arrays, strict=True)]


def augment_batch_on_device(batch_u8, size: int, rng=None, params: Augmentation | None = None):
    """A batch through the chain with paddle tensor ops on the batch's device: NHWC uint8 -> NCHW float32.

    Parameters come from `sample_augmentations(rng, n, size)` (rng: a Generator; default numpy's
    global state) unless `params` is given, so the distribution is the per-image path's. The steps
    mirror `apply_augmentation`: bilinear resize to R x R, jitter (float arithmetic with paddle's
    truncations), crop box and flip by bilinear grid_sample clamped to the box (cv2.resize of a
    box never reads outside it), rotation by nearest-neighbour grid_sample with black fill,
    normalisation. Values are rounded to integers after each resampling, as cv2 stores uint8.
    The batch's numbers reach the device in one copy.
    """
    n = batch_u8.shape[0]
    p = params if params is not None else sample_augmentations(rng or np.random, n, size)
    return _augment_on_device(batch_u8, size, _to_device(_device_numbers(p, n, size), batch_u8.place))


def _augment_on_device(batch_u8, size: int, numbers: list):
    """augment_batch_on_device, given its `_device_numbers` already on the batch's device."""
    import paddle
    import paddle.nn.functional as F

    b, c, a, *order, gx, gy, theta, mean, std = numbers
    n, side = batch_u8.shape[0], resized_size(size)

    def jitter_batch(x):
        for op in order:  # every image's step-th jitter operation; each image picks its own
            grey = 0.114 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.299 * x[:, 2:3]  # cv2's BGR weights, RGB data
            candidates = [x * b, (x - CONTRAST_PIVOT) * c + CONTRAST_PIVOT, x * a + grey * (1 - a)]
            x = paddle.where(op == 0, candidates[0], paddle.where(op == 1, candidates[1], candidates[2]))
            x = paddle.floor(paddle.clip(x, 0, 255))  # paddle truncates to uint8 after each step
        return x

    def resize(x):  # align_mode=0 is cv2's half-pixel bilinear, clamped at the borders
        return paddle.round(F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, align_mode=0))

    x = batch_u8.astype("float32").transpose([0, 3, 1, 2])
    x = jitter_batch(resize(x))
    grid = paddle.stack([gx[:, None, :].expand([n, size, size]), gy[:, :, None].expand([n, size, size])], axis=-1)
    x = paddle.round(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False))
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return (x / 255 - mean) / std


class DeviceBatches:
    """Training batches augmented on the device: the uint8 dataset is copied there once.

    Iterating gives one epoch: for each list of indices the `batch_sampler` yields (the training
    stage's loaders.GlobalBatchSampler, which decides the order), a (NCHW float32 tensor, int64
    label tensor) pair on `place` (default: paddle's current device; or e.g. "gpu:0"). The
    augmentation is `augment_batch_on_device`, the same distribution as `TrainDataset`, with its
    parameters drawn from `rng` (default: numpy's global state, which the training stage seeds and
    checkpoints, so a resumed run repeats it). Each batch costs one host-to-device copy: its
    indices and augmentation numbers together.
    """

    def __init__(self, images_u8: np.ndarray, labels: np.ndarray, size: int, batch_sampler, rng=None, place=None):
        import paddle

        if len(images_u8) > 2**24:  # the indices travel as float32, exact up to 2^24
            raise ValueError(f"{len(images_u8)} images: DeviceBatches sends indices as float32, exact up to 2^24")
        self.images = paddle.to_tensor(np.ascontiguousarray(images_u8), dtype="uint8", place=place)
        self.labels = paddle.to_tensor(np.asarray(labels, np.int64), place=place)
        self.size, self.batch_sampler = size, batch_sampler
        self.rng = np.random if rng is None else rng

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        import paddle

        for indices in self.batch_sampler:
            p = sample_augmentations(self.rng, len(indices), self.size)
            index, *numbers = _to_device([np.asarray(indices), *_device_numbers(p, len(indices), self.size)],
                                         self.images.place)
            index = index.astype("int64")
            yield (_augment_on_device(paddle.gather(self.images, index), self.size, numbers),
                   paddle.gather(self.labels, index))
