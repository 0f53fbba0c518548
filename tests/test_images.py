"""Training augmentation: our paths against the post's paddle.vision chain.

Distributions: our parameter sampler against paddle's own random draws. Outputs: the post's chain
is run with its random draws recorded, and the same parameters go through our paths.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from pipeline.hardware import paddle_setup
from pipeline.images import transforms

paddle = paddle_setup.import_paddle()

# after import_paddle(): it fixes OMP_NUM_THREADS before paddle loads and keeps the import quiet
import paddle.vision.transforms as T  # noqa: E402 - paddle must be imported by paddle_setup.import_paddle() first
import paddle.vision.transforms.functional as PF  # noqa: E402 - as above

N = 4000  # draws per distribution check
KS_LIMIT = 1.95 * np.sqrt(2 / N)  # two-sample Kolmogorov-Smirnov critical value at alpha = 0.001
LEVEL = 1 / 255 / transforms.STD.min()  # one uint8 level after normalisation (the largest such step)


def ks_distance(a, b) -> float:
    """Largest gap between the two empirical CDFs."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    points = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, points, "right") / len(a)
                        - np.searchsorted(b, points, "right") / len(b)).max())


def colour_images(n: int, seed: int = 0) -> np.ndarray:
    """32 px RGB test images with sharp, saturated colour edges (harder than CIFAR for the jitter)."""
    rng = np.random.default_rng(seed)
    return np.stack([cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (32, 32),
                                interpolation=cv2.INTER_CUBIC) for _ in range(n)])


@pytest.fixture
def record_blog(monkeypatch):
    """Run the post's chain on one image; return (paddle's output as numpy, its parameters)."""
    seen = {}

    def wrap(name, note):
        original = getattr(PF, name)

        def wrapper(img, *args):
            note(*args)
            return original(img, *args)
        monkeypatch.setattr(PF, name, wrapper)

    def saturation(img, factor):
        # paddle's cv2 backend draws the blend factor inside; replay numpy's stream to read it
        state = np.random.get_state()
        out = original_saturation(img, factor)
        np.random.set_state(state)
        seen["saturation"] = np.random.uniform(max(0, 1 - factor), 1 + factor)
        seen["order"].append(2)
        return out

    original_saturation = PF.adjust_saturation
    monkeypatch.setattr(PF, "adjust_saturation", saturation)
    wrap("adjust_brightness", lambda f: (seen.__setitem__("brightness", f), seen["order"].append(0)))
    wrap("adjust_contrast", lambda f: (seen.__setitem__("contrast", f), seen["order"].append(1)))
    wrap("crop", lambda *box: seen.__setitem__("box", box))
    wrap("hflip", lambda: seen.__setitem__("flip", True))
    wrap("rotate", lambda angle, *rest: seen.__setitem__("angle", angle))

    def run(chain, image):
        seen.clear()
        seen.update(order=[], flip=False)
        out = chain(image).numpy()
        aug = transforms.Augmentation(*seen["box"], seen["flip"], seen["angle"], seen["brightness"],
                                  seen["contrast"], seen["saturation"], tuple(seen["order"]))
        return out, aug
    return run


# ---- (a) the sampler's distribution is paddle's ----------------------------------------------------

def test_sampled_parameters_stay_in_the_chains_ranges():
    size = 128
    side = transforms.resized_size(size)
    aug = transforms.sample_augmentations(np.random.default_rng(0), N, size)
    assert side == 130 and transforms.resized_size(64) == 65 and transforms.resized_size(32) == 32
    assert (aug.height >= 1).all() and (aug.top >= 0).all() and (aug.top + aug.height <= side).all()
    assert (aug.width >= 1).all() and (aug.left >= 0).all() and (aug.left + aug.width <= side).all()
    area = aug.height * aug.width / side**2
    assert area.min() > 0.59 and area.max() <= 1  # [0.6, 1] up to rounding the sides to pixels
    ratio = aug.width / aug.height
    assert ratio.min() > 0.74 and ratio.max() < 1.35  # [3/4, 4/3] up to rounding
    assert np.abs(aug.angle).max() <= 20 and np.abs(aug.angle).mean() == pytest.approx(10, abs=0.5)
    assert aug.flip.mean() == pytest.approx(0.5, abs=0.03)
    for factor in (aug.brightness, aug.contrast):
        assert factor.min() >= 0.8 and factor.max() <= 1.2
    # paddle draws the saturation blend twice: alpha ~ U(max(0, 1 - f), 1 + f), f ~ U(0.8, 1.2)
    assert aug.saturation.min() >= 0 and aug.saturation.max() <= 2.2 and aug.saturation.min() < 0.05
    assert sorted(map(tuple, np.sort(aug.order, axis=1))) == [(0, 1, 2)] * N


@pytest.mark.parametrize("size", [128, 32])
def test_crop_boxes_follow_paddles_random_resized_crop(size):
    side = transforms.resized_size(size)
    random.seed(1)
    np.random.seed(1)
    crop = T.RandomResizedCrop(size, scale=transforms.CROP_SCALE, ratio=transforms.CROP_RATIO)
    blank = np.zeros((side, side, 3), np.uint8)
    theirs = np.array([crop._dynamic_get_param(blank) for _ in range(N)])  # (top, left, height, width)
    ours = transforms.sample_augmentations(np.random.default_rng(1), N, size)
    for k, name in enumerate(["top", "left", "height", "width"]):
        assert ks_distance(theirs[:, k], getattr(ours, name)) < KS_LIMIT, name
    assert np.mean(theirs[:, 2] * theirs[:, 3]) == pytest.approx(np.mean(ours.height * ours.width), rel=0.02)


def test_crop_falls_back_to_the_whole_image_like_paddle(monkeypatch):
    """When no draw fits (here: areas above the image's), both take the whole image."""
    monkeypatch.setattr(transforms, "CROP_SCALE", (1.2, 1.5))
    ours = transforms.sample_augmentations(np.random.default_rng(0), 50, 128)
    theirs = T.RandomResizedCrop(128, scale=(1.2, 1.5))._dynamic_get_param(np.zeros((130, 130, 3), np.uint8))
    assert theirs == (0, 0, 130, 130)
    assert (ours.top == 0).all() and (ours.left == 0).all() and (ours.height == 130).all() and (ours.width == 130).all()


def test_jitter_flip_and_rotation_follow_paddles_draws(monkeypatch):
    random.seed(2)
    np.random.seed(2)
    n = 3000
    degrees = transforms.DEGREES
    angles = [T.RandomRotation(degrees)._get_param((-degrees, degrees)) for _ in range(N)]
    pixel = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)
    flip = T.RandomHorizontalFlip(transforms.FLIP_PROB)
    flips = [not np.array_equal(flip(pixel), pixel) for _ in range(N)]
    # record ColorJitter's factors and order: wrap the functional ops it calls
    seen = {"brightness": [], "contrast": [], "saturation": [], "order": []}
    for code, name in enumerate(transforms.JITTER_OPS):
        original = getattr(PF, f"adjust_{name}")

        def wrapper(img, factor, code=code, name=name, original=original):
            seen["order"].append(code)
            if name != "saturation":
                seen[name].append(factor)
                return original(img, factor)
            state = np.random.get_state()  # paddle draws the blend factor inside: replay the draw
            out = original(img, factor)
            np.random.set_state(state)
            seen[name].append(np.random.uniform(max(0, 1 - factor), 1 + factor))
            return out
        monkeypatch.setattr(PF, f"adjust_{name}", wrapper)
    jitter = T.ColorJitter(transforms.JITTER, transforms.JITTER, transforms.JITTER)
    for _ in range(n):
        jitter(pixel)
    their_orders = np.array(seen["order"]).reshape(n, 3)

    ours = transforms.sample_augmentations(np.random.default_rng(2), N, 128)
    assert ks_distance(angles, ours.angle) < KS_LIMIT
    assert np.mean(flips) == pytest.approx(ours.flip.mean(), abs=0.045)
    limit = 1.95 * np.sqrt(1 / n + 1 / N)
    assert ks_distance(seen["brightness"], ours.brightness) < limit
    assert ks_distance(seen["contrast"], ours.contrast) < limit
    assert ks_distance(seen["saturation"], ours.saturation) < limit
    for order in {(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)}:
        theirs = np.mean((their_orders == order).all(axis=1))
        assert theirs == pytest.approx(np.mean((ours.order == order).all(axis=1)), abs=0.04), order


@pytest.mark.parametrize("size", [128, 32])
def test_per_image_sampler_is_the_batch_sampler(size, monkeypatch):
    """sample_augmentation (plain Python, per image) = sample_augmentations (numpy, per batch)."""
    many = transforms.sample_augmentations(np.random.default_rng(7), 2000, size).rows()
    rng = np.random.default_rng(7)
    for want in many:
        got = transforms.sample_augmentation(rng, size)
        assert got.order == want.order and got.flip == want.flip
        assert (got.top, got.left, got.height, got.width) == (want.top, want.left, want.height, want.width)
        assert np.allclose([got.angle, got.brightness, got.contrast, got.saturation],
                           [want.angle, want.brightness, want.contrast, want.saturation], rtol=1e-12, atol=0)
    monkeypatch.setattr(transforms, "CROP_SCALE", (1.2, 1.5))  # the fallback branch too
    assert transforms.sample_augmentation(np.random.default_rng(0), size) == transforms.sample_augmentations(
        np.random.default_rng(0), 1, size).rows()[0]


def test_paddles_saturation_blend_factor_spans_zero_to_2_2():
    """What the sampler copies: paddle's cv2 adjust_saturation re-draws its factor. Read alpha
    back from float32 pixels (no truncation): out_R = grey + alpha * (R - grey)."""
    np.random.seed(4)
    pixel = np.array([[[100, 50, 0]]], np.float32)
    grey = 0.114 * 100 + 0.587 * 50  # cv2's BGR weights on RGB data
    saturation = T.SaturationTransform(transforms.JITTER)
    alphas = np.array([(saturation(pixel)[0, 0, 0] - grey) / (100 - grey) for _ in range(N)])
    ours = transforms.sample_augmentations(np.random.default_rng(4), N, 128).saturation
    assert alphas.min() < 0.05 and 2.1 < alphas.max() <= 2.2 + 1e-5
    assert ks_distance(alphas, ours) < KS_LIMIT


# ---- (b) fixed parameters: our output against the post's chain --------------------------------------

@pytest.mark.parametrize("size", [128, 64, 32])
def test_same_parameters_give_the_posts_output(record_blog, size):
    random.seed(size)
    np.random.seed(size)
    chain = transforms.blog_train_transform(size)
    for image in colour_images(6):
        theirs, aug = record_blog(chain, image)
        # the reference's operations in its order: equal up to float rounding
        np.testing.assert_allclose(transforms.apply_augmentation(image, aug, size), theirs, rtol=0, atol=1e-5)


# ---- (c) output format ---------------------------------------------------------------------------

def test_output_is_normalised_chw_float32_with_black_corners():
    image = colour_images(1)[0]
    aug = transforms.Augmentation(0, 0, 130, 130, False, 20.0, 1.0, 1.0, 1.0, (0, 1, 2))
    out = transforms.apply_augmentation(image, aug, 128)
    assert out.dtype == np.float32 and out.shape == (3, 128, 128) and out.flags.c_contiguous
    np.testing.assert_allclose(out[:, 0, 0], -transforms.MEAN / transforms.STD, rtol=1e-6)  # rotation's black fill
    assert np.allclose(transforms.denormalise(out[None])[0].max(), image.max() / 255, atol=2 / 255)
    # at 32 px with the identity parameters the chain reduces to the test transform
    identity = transforms.Augmentation(0, 0, 32, 32, False, 0.0, 1.0, 1.0, 1.0, (0, 1, 2))
    np.testing.assert_allclose(transforms.apply_augmentation(image, identity, 32),
                               transforms.test_batch(image[None], 32)[0], atol=1e-6)


def test_fast_transform_draws_from_the_sampler():
    size, imgs = 64, colour_images(5)
    transform, rng = transforms.fast_train_transform(size, np.random.default_rng(9)), np.random.default_rng(9)
    for image in imgs:
        aug = transforms.sample_augmentation(rng, size)
        np.testing.assert_array_equal(transform(image), transforms.apply_augmentation(image, aug, size))


def test_fast_transform_follows_numpys_global_state():
    """As the post's chain: np.random.seed fixes the draws, and restoring numpy's state (what a
    resumed training run does from its checkpoint) repeats them."""
    image, transform = colour_images(1)[0], transforms.fast_train_transform(32)
    np.random.seed(5)
    first = [transform(image) for _ in range(3)]
    np.random.seed(5)
    assert all(np.array_equal(x, transform(image)) for x in first)
    state = np.random.get_state()
    later = [transform(image) for _ in range(3)]
    np.random.set_state(state)
    assert all(np.array_equal(x, transform(image)) for x in later)
    assert not np.array_equal(first[0], first[1])


def test_train_dataset_feeds_paddles_dataloader():
    imgs, labels = colour_images(8), np.arange(8, dtype=np.int64)
    dataset = transforms.TrainDataset(imgs, labels, 64)
    x, y = dataset[3]
    assert x.shape == (3, 64, 64) and x.dtype == np.float32 and y == 3
    batches = list(paddle.io.DataLoader(dataset, batch_size=4, shuffle=True, drop_last=True))
    assert len(batches) == 2 and batches[0][0].shape == [4, 3, 64, 64]
    assert sorted(np.concatenate([b[1].numpy() for b in batches]).tolist()) == list(range(8))
    blog = transforms.TrainDataset(imgs, labels, 64, transform=transforms.blog_train_transform(64))
    assert list(blog[0][0].shape) == [3, 64, 64]


# ---- (d) on-device batches ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [128, 64, 32])
def test_device_batches_match_the_per_image_path(size):
    imgs = colour_images(12, seed=1)
    aug = transforms.sample_augmentations(np.random.default_rng(size), len(imgs), size)
    got = transforms.augment_batch_on_device(paddle.to_tensor(imgs), size, params=aug)
    assert got.dtype == paddle.float32 and got.shape == [12, 3, size, size]
    want = np.stack([transforms.apply_augmentation(im, a, size) for im, a in zip(imgs, aug.rows(), strict=True)])
    diffs = np.abs(got.numpy() - want)
    # Float arithmetic against cv2's fixed point: a level here and there, up to 2 once the jitter
    # amplifies it; in rare pixels nearest-neighbour rotation picks the pixel across an edge, or
    # the black fill instead of the border pixel (measured over 12 seeds: mean <= 0.23 level,
    # p99 <= 2 levels, at most 0.007% of values off by more than 3 levels).
    assert diffs.mean() < 0.5 * LEVEL and np.quantile(diffs, 0.99) <= 3.01 * LEVEL
    assert np.mean(diffs > 3.01 * LEVEL) < 1e-3


def test_device_path_draws_from_the_sampler():
    imgs = paddle.to_tensor(colour_images(4))
    drawn = transforms.augment_batch_on_device(imgs, 32, rng=np.random.default_rng(11))
    given = transforms.augment_batch_on_device(imgs, 32,
                                           params=transforms.sample_augmentations(np.random.default_rng(11), 4, 32))
    np.testing.assert_array_equal(drawn.numpy(), given.numpy())


def test_device_batches_follow_the_sampler_and_keep_labels_aligned():
    from pipeline.images.batches import GlobalBatchSampler

    imgs, labels = colour_images(10, seed=2), np.arange(10, dtype=np.int64) * 7
    sampler = GlobalBatchSampler(10, 4, seed=3)
    batches = transforms.DeviceBatches(imgs, labels, 32, sampler, rng=np.random.default_rng(5))
    assert len(batches) == 2  # full batches only: 2 left over, dropped
    epoch = list(batches)
    assert len(epoch) == 2 and all(x.shape == [4, 3, 32, 32] and y.shape == [4] for x, y in epoch)
    rng = np.random.default_rng(5)  # replay: the sampler's batches, each augmented with the next parameters
    for index, (x, y) in zip(sampler, epoch, strict=True):
        np.testing.assert_array_equal(y.numpy(), labels[index])
        aug = transforms.sample_augmentations(rng, 4, 32)
        np.testing.assert_array_equal(
            x.numpy(), transforms.augment_batch_on_device(paddle.to_tensor(imgs[index]), 32, params=aug).numpy())
    sampler.set_epoch(2)
    assert not np.array_equal(np.concatenate([y.numpy() for _, y in batches]),
                              np.concatenate([y.numpy() for _, y in epoch]))
    # without an rng: numpy's global state, as the training stage seeds and checkpoints it
    unseeded = transforms.DeviceBatches(imgs, labels, 32, sampler)
    np.random.seed(8)
    first = [x.numpy() for x, _ in unseeded]
    np.random.seed(8)
    assert all(np.array_equal(a, x.numpy()) for a, (x, _) in zip(first, unseeded, strict=True))


def test_each_device_batch_crosses_to_the_device_in_one_copy(monkeypatch):
    """On a GPU every paddle.to_tensor of host data is a host-to-device copy, which the GPU waits for;
    a batch's indices and augmentation numbers go together (they once took about ten)."""
    from pipeline.images.batches import GlobalBatchSampler

    imgs, labels = colour_images(12, seed=2), np.arange(12, dtype=np.int64)
    sampler = GlobalBatchSampler(12, 4, seed=3)
    batches = transforms.DeviceBatches(imgs, labels, 32, sampler, rng=np.random.default_rng(5))
    copies, to_tensor = [], paddle.to_tensor
    monkeypatch.setattr(paddle, "to_tensor", lambda *a, **kw: (copies.append(1), to_tensor(*a, **kw))[1])
    assert len(list(batches)) == 3 and len(copies) == 3
