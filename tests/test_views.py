"""views: test-time views (mirror, extra decoded sizes) and how their answers combine."""

import torch

from imgclf.load import resize_batch
from imgclf.models import create_model
from imgclf.views import tta_logits, view_sizes


def test_flip_tta_averages_probabilities():
    torch.manual_seed(0)
    m = create_model("fastcnn-s", 2).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        p = tta_logits(m, x, True).softmax(1)
        want = (m(x).softmax(1) + m(x.flip(3)).softmax(1)) / 2
        assert torch.allclose(p, want, atol=1e-6)
        assert torch.equal(tta_logits(m, x, False), m(x))


def test_tta_views_add_other_sizes_and_their_mirrors():
    torch.manual_seed(0)
    m = create_model("fastcnn-s", 2).eval()
    x, other = torch.randn(4, 3, 72, 72), torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        p = tta_logits(m, x, True, [64]).softmax(1)  # resized on the batch (runs before tta_decode)
        small = resize_batch(x, 64)
        views = [x, x.flip(3), small, small.flip(3)]
        assert torch.allclose(p, sum(m(v).softmax(1) for v in views) / 4, atol=1e-6)
        assert torch.allclose(tta_logits(m, x, False, [64]).softmax(1), (m(x).softmax(1) + m(small).softmax(1)) / 2,
                              atol=1e-6)
        p = tta_logits(m, x, True, more=[other]).softmax(1)  # decoded at 64 px: given as is
        views = [x, x.flip(3), other, other.flip(3)]
        assert torch.allclose(p, sum(m(v).softmax(1) for v in views) / 4, atol=1e-6)


def test_view_sizes_decode_for_new_runs_and_resize_for_old_ones():
    assert view_sizes({"tta_sizes": [64], "tta_decode": True}) == ([64], [])
    assert view_sizes({"tta_sizes": [64]}) == ([], [64])  # model.json written before tta_decode
    assert view_sizes({}) == ([], [])
