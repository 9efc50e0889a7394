"""The loader's batch transforms give exactly what their plain formulas give, whatever the shape."""


import pytest
import torch

from imgclf.load import Augment, augment, epoch_size, input_fn, resize_batch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("shape", [(32, 24, 24, 3), (1, 5, 7, 3), (3, 11, 13, 3), (2, 64, 48, 3)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_input_fn_normalises_exactly(shape, channels_last):
    # The flat view (rows of up to 16 pixels, fewer when the batch's pixel count is not a multiple)
    # must give the very floats of (x/255 - mean)/std in NCHW, in the asked memory format.
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(shape[1]))
    x0 = x.clone()
    y = input_fn(torch.device("cpu"), MEAN, STD, channels_last)(x)
    scale = torch.tensor([1.0 / (255.0 * s) for s in STD]).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    ref = x.permute(0, 3, 1, 2).float() * scale + shift
    assert torch.equal(y, ref)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    assert torch.equal(x, x0)  # the input batch is left as it was (the cache's memory may back it)


@pytest.mark.parametrize("aug", [Augment(), Augment(vflip=True), Augment(hflip=False, vflip=True)])
def test_flips_mirror_whole_images_chosen_by_the_generator(aug):
    x = torch.randint(0, 256, (9, 6, 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = augment(x, aug, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the same coins, drawn as augment draws them
    h = torch.rand(9, generator=g) < 0.5 if aug.hflip else torch.zeros(9, dtype=torch.bool)
    v = torch.rand(9, generator=g) < 0.5 if aug.vflip else torch.zeros(9, dtype=torch.bool)
    assert h.any() or v.any()
    for i in range(9):
        ref = x[i].flip(1) if h[i] else x[i]
        ref = ref.flip(0) if v[i] else ref
        assert torch.equal(y[i], ref), i
    assert y.is_contiguous()


def test_given_flips_are_followed():
    x = torch.arange(2 * 2 * 3 * 3, dtype=torch.uint8).view(2, 2, 3, 3)
    y = augment(x, Augment(), torch.Generator(), hflips=torch.tensor([False, True]))
    assert torch.equal(y[0], x[0]) and torch.equal(y[1], x[1].flip(1))


def test_shifts_move_whole_images_and_fill_with_zeros():
    x = torch.zeros(64, 16, 16, 3, dtype=torch.uint8)
    x[:, 8, 8] = 255  # one bright pixel per image
    g = torch.Generator().manual_seed(0)
    y = augment(x, Augment(hflip=False, translate=0.25), g)  # up to 4 px each way
    assert y.shape == x.shape and y.dtype == torch.uint8
    pos = [tuple(int(v) for v in torch.nonzero(img[..., 0])[0]) for img in y]
    shifts = {(r - 8, c - 8) for r, c in pos}
    assert all(abs(dy) <= 4 and abs(dx) <= 4 for dy, dx in shifts) and len(shifts) > 10  # random per image
    assert all(int((img > 0).sum()) == 3 for img in y)  # nothing else appears
    z = augment(x, Augment(hflip=False, translate=0.25), torch.Generator().manual_seed(0))
    assert torch.equal(y, z)  # seeded: the same shifts again
    # real content, not square: every output is exactly one window of the zero-padded image
    x = torch.randint(1, 256, (16, 12, 20, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = augment(x, Augment(hflip=False, translate=0.25), g)  # p = round(0.25 * 12) = 3
    padded = torch.nn.functional.pad(x, (0, 0, 3, 3, 3, 3))
    for img, src in zip(y, padded):
        assert sum(torch.equal(img, src[dy:dy + 12, dx:dx + 20]) for dy in range(7) for dx in range(7)) == 1


def test_batches_with_index_name_the_rows_they_hold(prepared):
    from imgclf.cache import open_cache
    from imgclf.load import batches
    from imgclf.manifest import load_dataset

    split = open_cache(load_dataset(prepared.root), 32, workers=1)["train"]
    got = list(batches(split, 7, shuffle=True, generator=torch.Generator().manual_seed(0), with_index=True))
    rows = torch.cat([r for _, _, r in got])
    assert sorted(rows.tolist()) == list(range(len(split)))  # every row once
    for x, y, r in got:
        assert torch.equal(x, torch.from_numpy(split.images[r.numpy()])) and torch.equal(y, torch.from_numpy(
            split.labels[r.numpy()]))


def test_progressive_sizes_grow_from_start_fraction_to_full_size():
    sizes = [epoch_size(96, e, 20, 2 / 3) for e in range(1, 21)]
    assert sizes[:10] == [64] * 10  # first half at 2/3 of the size
    assert sizes[17:] == [96] * 3  # full size from 85% of the epochs
    assert sizes == sorted(sizes) and all(s % 8 == 0 for s in sizes)
    assert [epoch_size(96, e, 20, None) for e in (1, 20)] == [96, 96]
    x = torch.rand(2, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    y = resize_batch(x, 64)
    assert y.shape == (2, 3, 64, 64) and y.is_contiguous(memory_format=torch.channels_last)
    assert resize_batch(x, 96) is x
    assert torch.allclose(resize_batch(torch.full((1, 3, 96, 96), 0.7), 48), torch.tensor(0.7))  # flat stays flat
