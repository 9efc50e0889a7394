"""The loader's batch transforms give exactly what their plain formulas give, whatever the shape."""

import pytest
import torch

from imgclf.load import Augment, augment, input_fn

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("shape", [(32, 24, 24, 3), (1, 5, 7, 3), (3, 11, 13, 3), (2, 64, 48, 3)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_input_fn_normalises_exactly(shape, channels_last):
    # The flat view (rows of up to 16 pixels, fewer when the batch's pixel count is not a multiple)
    # must give the very floats of (x/255 - mean)/std in NCHW, in the asked memory format.
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(shape[1]))
    y = input_fn(torch.device("cpu"), MEAN, STD, channels_last)(x)
    scale = torch.tensor([1.0 / (255.0 * s) for s in STD]).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    ref = x.permute(0, 3, 1, 2).float() * scale + shift
    assert torch.equal(y, ref)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    assert x.dtype == torch.uint8 and int(x.max()) <= 255  # the input batch is left as it was


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
