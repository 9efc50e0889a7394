"""split: stratified, seeded, and bad fractions refused."""

import numpy as np
import pytest

from imgclf.errors import ImgclfError
from imgclf.split import assign_splits


def test_split_stratified_and_reproducible():
    labels = ["a"] * 100 + ["b"] * 50
    s1 = assign_splits(labels, 0.07, 0.30, seed=1)
    assert s1 == assign_splits(labels, 0.07, 0.30, seed=1)
    assert s1 != assign_splits(labels, 0.07, 0.30, seed=2)
    arr, lab = np.array(s1), np.array(labels)
    assert (arr[lab == "a"] == "test").sum() == 30 and (arr[lab == "b"] == "test").sum() == 15
    assert (arr[lab == "a"] == "val").sum() == 7 and (arr[lab == "b"] == "val").sum() == 4


@pytest.mark.parametrize("val,test", [(-0.1, 0.3), (0.5, 0.5), (0.1, 1.0)])
def test_split_rejects_bad_fractions(val, test):
    with pytest.raises(ImgclfError):
        assign_splits(["a", "b"], val, test, 0)
