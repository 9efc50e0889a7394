"""Baseline (b): the tutorial's experiment in Keras, for benchmarks/end_to_end.py.

Runs in its own venv (benchmarks/.venv-keras, tensorflow-cpu from PyPI; never a dependency of
imgclf). `image_dataset_from_directory` + `fit`, as Keras users would, on the split imgclf laid
out with `prepare --materialize symlink`; the same seed-cnn, presets, batch sizes and epochs.
Prints one JSON line per preset.

    benchmarks/.venv-keras/bin/python benchmarks/keras_way.py DATA --epochs 3
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402
from common import baseline_args  # noqa: E402

# name: (optimizer factory, batch size) -- the same values as imgclf's presets
PRESETS = {
    "vanilla-sgd": (lambda: keras.optimizers.SGD(learning_rate=0.001), 1),
    "minibatch-sgd": (lambda: keras.optimizers.SGD(learning_rate=0.01), 32),
    "momentum": (lambda: keras.optimizers.SGD(learning_rate=0.01, momentum=0.9), 32),
    "adam": (lambda: keras.optimizers.Adam(learning_rate=0.001), 32),
}


def seed_cnn(num_classes: int) -> keras.Model:
    def block(c):
        return [layers.Conv2D(c, 3, strides=2, padding="same"), layers.MaxPooling2D(2), layers.ReLU()]

    return keras.Sequential([
        keras.Input((224, 224, 3)), layers.RandomFlip("horizontal"), layers.Rescaling(1 / 127.5, offset=-1),
        *block(32), *block(64), *block(128), layers.Flatten(), layers.Dense(10), layers.ReLU(),
        layers.Dropout(0.5), layers.Dense(num_classes),
    ])


def main():
    args = baseline_args()
    classes = json.load(open(f"{args.data}/dataset.json"))["classes"]
    load = lambda s, bs, shuffle: keras.utils.image_dataset_from_directory(  # noqa: E731
        f"{args.data}/{s}", image_size=(224, 224), batch_size=bs, shuffle=shuffle, seed=0, class_names=classes,
        verbose=False).prefetch(tf.data.AUTOTUNE)
    for name in args.presets.split(","):
        make_opt, bs = PRESETS[name]
        t0 = time.perf_counter()
        keras.utils.set_random_seed(0)  # the same initial weights for every preset
        model = seed_cnn(len(classes))
        model.compile(make_opt(), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        hist = model.fit(load("train", bs, True), validation_data=load("val", 100, False), epochs=args.epochs,
                         verbose=0)
        _, acc = model.evaluate(load("test", 100, False), verbose=0)
        print(json.dumps({"preset": name, "test_accuracy": float(acc),
                          "val_accuracy": float(hist.history["val_accuracy"][-1]),
                          "seconds": round(time.perf_counter() - t0, 2)}), flush=True)


if __name__ == "__main__":
    main()
