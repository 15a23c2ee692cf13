import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from glyph_train.training.augment import AugmentParams, augment, augment_batch

REPO = Path(__file__).resolve().parents[1]
STILL = AugmentParams(translate=0, scale=0, rotate_deg=0, shear_deg=0, stroke=0, gamma=0, contrast=0)


def l_glyph(size=64) -> torch.Tensor:
    """An anti-aliased 'L' (uint8, ink 255): ink mass left and bottom, so a mirror image moves its centroid."""
    big = torch.zeros(4 * size, 4 * size)
    big[42:215, 43:77] = 1.0  # stem (edges off the 4-pixel grid: grey anti-aliased borders)
    big[177:215, 43:190] = 1.0  # foot
    return (torch.nn.functional.avg_pool2d(big[None], 4)[0] * 255).round().to(torch.uint8)


def centroid(img: torch.Tensor) -> torch.Tensor:
    img = img.reshape(img.shape[-2:]).float()
    ys, xs = torch.meshgrid(torch.arange(img.shape[0]), torch.arange(img.shape[1]), indexing="ij")
    return torch.stack([(xs * img).sum(), (ys * img).sum()]) / img.sum()


def test_shapes_dtypes_and_range():
    img = l_glyph()
    for inp in (img, img[None], img.float() / 255, (img.float() / 255)[None]):
        out = augment(inp, seed=0, epoch=0, index=3)
        assert out.shape == (1, 64, 64) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1 and out.max() > 0.5
    batch = augment_batch(img.expand(5, 1, 64, 64), 0, 0, range(5))
    assert batch.shape == (5, 1, 64, 64) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all() and batch.min() >= 0 and batch.max() <= 1


def test_input_is_not_modified():
    img = l_glyph().float() / 255
    before = img.clone()
    augment(img, 0, 0, 0)
    augment(img, 0, 0, 0, AugmentParams(enabled=False))
    assert torch.equal(img, before)


def test_same_triple_same_output_and_every_part_of_it_matters():
    img = l_glyph()
    out = augment(img, seed=1, epoch=2, index=3)
    assert torch.equal(out, augment(img, seed=1, epoch=2, index=3))
    for other in ((1, 3, 3), (1, 2, 4), (2, 2, 3)):
        assert not torch.equal(out, augment(img, *other))


def test_every_epoch_differs():
    img = l_glyph()
    outs = [augment(img, 0, epoch, 7) for epoch in range(8)]
    assert all(not torch.equal(a, b) for i, a in enumerate(outs) for b in outs[i + 1 :])


def test_batch_equals_single_in_any_order():
    imgs = torch.stack([l_glyph(), l_glyph().flip(0), l_glyph().T.contiguous(), l_glyph() // 2])[:, None]
    indices = [10, 11, 12, 13]
    batch = augment_batch(imgs, 5, 1, indices)
    perm = [2, 0, 3, 1]
    shuffled = augment_batch(imgs[perm], 5, 1, [indices[i] for i in perm])
    for b, i in enumerate(perm):
        assert torch.equal(shuffled[b], batch[i])
        assert torch.equal(batch[i], augment(imgs[i], 5, 1, indices[i]))


def test_same_result_in_another_process_with_other_threads(tmp_path):
    """What a DataLoader worker or another rank computes: a fresh interpreter, 1 thread, another order."""
    script = (
        "import sys, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[2])\n"
        "from test_augment import l_glyph; from glyph_train.training.augment import augment\n"
        "torch.save(torch.stack([augment(l_glyph(), 9, 4, i) for i in (7, 3, 5)]), sys.argv[1])\n"
    )
    out = tmp_path / "augment.pt"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, "-c", script, str(out), str(REPO / "tests")], check=True, env=env)
    theirs = torch.load(out)
    torch.set_num_threads(2)
    ours = augment_batch(l_glyph().expand(3, 1, 64, 64), 9, 4, [3, 5, 7])
    assert torch.equal(theirs[0], ours[2]) and torch.equal(theirs[1], ours[0]) and torch.equal(theirs[2], ours[1])


def test_never_flips():
    img = l_glyph()
    size = img.shape[-1]
    original = centroid(img)
    mirrors = [torch.stack([size - 1 - original[0], original[1]]), torch.stack([original[0], size - 1 - original[1]])]
    for index in range(200):
        c = centroid(augment(img, 0, 0, index))
        assert all((c - original).norm() < (c - m).norm() for m in mirrors), index


def test_disabled_and_zero_strength_are_identity():
    img = l_glyph()
    assert torch.equal(augment(img, 0, 0, 1, AugmentParams(enabled=False)), img[None].float() / 255)
    for params in (AugmentParams(strength=0.0), AugmentParams(p=0.0), STILL):
        assert torch.allclose(augment(img, 0, 0, 1, params), img[None].float() / 255, atol=1e-6)


def test_p_leaves_some_samples_untouched():
    img = l_glyph()
    untouched = [torch.allclose(augment(img, 0, 0, i, AugmentParams(p=0.5)), img[None] / 255, atol=1e-6)
                 for i in range(40)]
    assert 5 < sum(untouched) < 35


def test_stroke_weight_goes_both_ways_and_stays_within_one_pixel():
    img = l_glyph()
    base = img.float().sum() / 255
    grown = torch.nn.functional.max_pool2d(img[None, None].float(), 3, 1, 1)[0] > 0
    masses = []
    for index in range(20):
        out = augment(img, 0, 0, index, replace(STILL, stroke=1.0))
        assert not (out[~grown] > 0).any()  # at most a one-pixel dilation
        masses.append(out.sum().item())
    assert min(masses) < base - 10 and max(masses) > base + 10


@pytest.mark.parametrize("field", ["translate", "scale", "rotate_deg", "shear_deg", "gamma", "contrast"])
def test_each_transform_acts_alone(field):
    img = l_glyph()
    params = replace(STILL, **{field: getattr(AugmentParams(), field)})
    assert not torch.allclose(augment(img, 0, 0, 2, params), img[None] / 255, atol=1e-3)


def test_width_jitter_condenses_and_extends_keeping_the_height():
    img = l_glyph()
    params = replace(STILL, aspect=0.3)

    def extent(x: torch.Tensor, axis: int) -> int:
        ink = (x.reshape(x.shape[-2:]) > 0.5).any(dim=axis).nonzero()
        return int(ink.max() - ink.min())

    widths = [extent(augment(img, 0, 0, i, params), 0) for i in range(20)]
    heights = [extent(augment(img, 0, 0, i, params), 1) for i in range(20)]
    base_w, base_h = extent(img[None] / 255, 0), extent(img[None] / 255, 1)
    assert min(widths) < base_w - 2 and max(widths) > base_w + 2  # both condensed and extended
    ratio = [w / h for w, h in zip(widths, heights)]
    assert max(ratio) / min(ratio) > 1.2
    assert torch.equal(augment(img, 0, 0, 3, replace(params, aspect=0.0)), augment(img, 0, 0, 3, STILL))


def test_multi_channel_images_move_together():
    img = l_glyph()
    two = torch.stack([img, img])  # (2, H, W): a tight+em image's channels share one transform
    out = augment(two, 0, 4, 7)
    assert out.shape == (2, 64, 64)
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out[0], augment(img, 0, 4, 7)[0])
