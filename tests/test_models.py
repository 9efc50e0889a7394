"""models: the registry, each spec's knowledge, the tutorial's CNN, `imgclf models`."""

import pytest
import torch

from imgclf.errors import ImgclfError
from imgclf.models import create_model, get_spec, list_models


def test_seed_cnn_shape_and_logits():
    m = create_model("seed-cnn", 3).eval()
    assert get_spec("seed-cnn").input_size == 224
    out = m(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 3)
    assert not any(isinstance(x, (torch.nn.Sigmoid, torch.nn.Softmax)) for x in m.modules())
    assert m[4].in_features == 3 * 3 * 128


def test_registry_errors():
    assert "seed-cnn" in list_models()
    with pytest.raises(ImgclfError, match="unknown"):
        create_model("resnet9000", 2)
    with pytest.raises(ImgclfError, match="at least 2"):
        create_model("seed-cnn", 1)


def test_models_lists_every_bundled_recipe(capsys):
    from imgclf.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("vanilla-sgd", "minibatch-sgd", "momentum", "adam", "fastcnn"):
        assert name in out
    assert "Muon lr" in out and "0.05" in out


def test_each_spec_knows_its_head_weights_and_cost():
    import torch.nn as nn

    from imgclf.models import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        model = spec.build(3)
        head = spec.head_of(model)
        assert isinstance(head, nn.Linear) and head.out_features == 3, name  # the layer a new dataset replaces
        if spec.grid is not None:  # the planner's cost model: pixels after the stem, growing with the size
            assert spec.family and spec.grid(2 * spec.input_size) == 4 * spec.grid(spec.input_size)
    assert get_spec("efficientnet-lite0").weights is not None and get_spec("fastcnn-s").weights is None
    assert get_spec("fastcnn-s").family == get_spec("fastcnn-s-p3").family != get_spec("fastcnn-m").family


def test_no_module_outside_models_names_a_model():
    """Model knowledge lives in the specs: nothing else branches on a model's name."""
    import re
    from pathlib import Path

    import imgclf

    pkg = Path(imgclf.__file__).parent
    pattern = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](seed-cnn|fastcnn[\w-]*|efficientnet[\w-]*)["']""")
    hits = [f"{p.name}:{i}" for p in pkg.glob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert hits == []


def test_readme_module_map_lists_every_module():
    import re
    from pathlib import Path

    import imgclf

    pkg = Path(imgclf.__file__).parent
    modules = {p.stem for p in pkg.glob("*.py") if not p.stem.startswith("_")}
    modules |= {f"models/{p.stem}" for p in (pkg / "models").glob("*.py") if not p.stem.startswith("_")}
    readme = (pkg.parents[1] / "README.md")
    if not readme.is_file():
        import pytest

        pytest.skip("an installed copy without the README")
    text = readme.read_text().split("## Architecture", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([\w/]+)`", text))
    assert modules - listed == set()
