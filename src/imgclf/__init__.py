"""imgclf: a folder of labelled images in; a trained, evaluated, honestly compared classifier out.

The CLI is a thin shell over these functions; each stage lives in its own module:

    from imgclf import prepare, PrepareConfig, plan, train, TrainConfig, compare, CompareConfig
    ds = prepare(PrepareConfig(src="PetImages", out="pets"))
    result = train(plan(TrainConfig(data="pets", out="run", max_seconds=300)))  # best fastcnn for 5 min
    result = train(TrainConfig(data="pets", out="run2", model="seed-cnn", epochs=2))  # the tutorial's
    rows = compare(CompareConfig(base=TrainConfig(data="pets", out="cmp", epochs=3), seeds=3))
    predict("run", ["my_cat.jpg"])
    clf = Classifier("run"); clf.predict([pil_image, uint8_array])  # load once, predict many times
    export("run")  # ONNX with its preprocessing written down, verified on the test split
    audit(AuditConfig(data="pets", out="audit"))  # probably wrong labels, near-duplicates, outliers

Names resolve lazily, so `import imgclf` stays fast and torch loads only when needed.
"""

__version__ = "0.1.0"

from .errors import DecodeError, Diverged, ImgclfError, Interrupted  # noqa: E402

_API = {
    "scan": "scan", "assign_splits": "split", "prepare": "prepare", "PrepareConfig": "prepare",
    "load_dataset": "manifest", "open_cache": "cache", "decode_image": "decode", "read_and_decode": "decode",
    "create_model": "models", "list_models": "models", "Recipe": "recipes", "PRESETS": "recipes",
    "load_recipes": "recipes", "train": "train", "TrainConfig": "train", "evaluate_run": "evaluate", "plan": "plan",
    "compare": "compare", "CompareConfig": "compare", "predict": "predict", "load_model": "runfolder",
    "show": "show", "run_demo": "demo",
    "Classifier": "classifier", "export": "export", "evaluate_folder": "evaluate",
    "audit": "audit", "AuditConfig": "audit", "create_app": "serve",
}
__all__ = ["__version__", "DecodeError", "Diverged", "ImgclfError", "Interrupted", *_API]


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'imgclf' has no attribute {name!r}")
