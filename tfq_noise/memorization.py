"""How much of its known-wrong labels a model has learned by heart, epoch by epoch: a Keras callback.

    from tfq_noise import MemorizationCallback

    watch = MemorizationCallback(train_images, noisy_labels, clean_labels)
    model.fit(train_images, noisy_labels, epochs=20, callbacks=[watch])
    watch.history["memorized"]        # per epoch: share of the corrupted examples predicted as their wrong label
    watch.history["corrected"]        # ...and as their true label
    watch.plot()                      # both curves, in %

The examples whose noisy label differs from the clean one are the corrupted ones. At the end of every epoch the
callback predicts the images it was given (in inference mode, as a deployed model would; with
``training_mode=True`` also as the loss sees them: BatchNorm on batch statistics, every non-trainable
variable restored afterwards, in batches of ``train_batch_size``) and records, per epoch, the shares of :func:`tfq_noise.tasks.memorization_metrics`:
``memorized``, ``corrected``, ``train_noisy_accuracy`` and ``train_clean_accuracy`` (training mode:
``trainmode_*``). They are added to the epoch's logs too, so Keras's own ``History``, ``CSVLogger`` or
TensorBoard see them. A model that memorizes nothing predicts its corrupted examples' wrong labels about as
often as any other wrong class: ``(1 - corrected) / (C - 1)``, :meth:`MemorizationCallback.no_memorization_level`.

Images go to the model as given: pass them as ``fit`` takes them (already normalized if the model expects
it). The model must output one score per class (logits or probabilities: the argmax is the same).
"""

from __future__ import annotations

import numpy as np

from tfq_noise import keras
from tfq_noise.tasks import memorization_metrics

KEYS = ("memorized", "corrected", "train_noisy_accuracy", "train_clean_accuracy")

__all__ = ["KEYS", "MemorizationCallback"]


class MemorizationCallback(keras.callbacks.Callback):
    """Records each epoch how many corrupted training examples the model predicts as their wrong label.

    Args:
      images: the training images to score [N, ...], as the model takes them (a subset of a few thousand is
        enough: ``max_examples`` picks a fixed random one).
      noisy_labels: the labels trained on, int [N].
      clean_labels: the true labels, int [N]; examples where they differ are the corrupted ones.
      batch_size: prediction batch size.
      training_mode: also measure in training mode (``trainmode_*`` keys), in batches of ``train_batch_size``.
      max_examples: score at most this many examples (a fixed subset, seed 0); None: all.
      keep_predictions: keep each epoch's predicted classes in :attr:`predictions` (int [n] per epoch).
    """

    def __init__(self, images, noisy_labels, clean_labels, *, batch_size: int = 512, training_mode: bool = False,
                 train_batch_size: int = 128, max_examples: int | None = None, keep_predictions: bool = False):
        super().__init__()
        images = np.asarray(images)
        noisy, clean = np.asarray(noisy_labels).reshape(-1), np.asarray(clean_labels).reshape(-1)
        if not (len(images) == len(noisy) == len(clean)) or len(images) == 0:
            raise ValueError(f"images, noisy_labels and clean_labels must hold the same examples (at least one), "
                             f"got {len(images)}, {len(noisy)} and {len(clean)}")
        if noisy.dtype.kind not in "iu" or clean.dtype.kind not in "iu":
            raise ValueError(f"labels must be integer class ids, got {noisy.dtype} and {clean.dtype}")
        keep = np.arange(len(images))
        if max_examples is not None and max_examples < len(images):
            keep = np.sort(np.random.default_rng(0).permutation(len(images))[:max_examples])
        self.images, self.noisy_labels, self.clean_labels = images[keep], noisy[keep], clean[keep]
        self.corrupted = self.noisy_labels != self.clean_labels
        self.batch_size, self.train_batch_size = batch_size, train_batch_size
        self.training_mode, self.keep_predictions = training_mode, keep_predictions
        self.history: dict[str, list] = {"epoch": []}
        self.predictions: list[np.ndarray] = []
        self._training_call = None

    @property
    def corrupted_count(self) -> int:
        """How many of the scored examples carry a wrong label."""
        return int(self.corrupted.sum())

    def set_model(self, model):
        super().set_model(model)
        self._training_call = None

    def _predicted(self, training: bool) -> np.ndarray:
        if not training:
            return np.argmax(self.model.predict(self.images, batch_size=self.batch_size, verbose=0), axis=-1)
        import tensorflow as tf

        if self._training_call is None:
            model = self.model
            self._training_call = tf.function(lambda x: model(x, training=True))
        # As tfq_noise.callbacks.training_mode_logits does for the runner: every non-trainable variable
        # (BatchNorm statistics, quantizer ranges) is put back, so measuring leaves no trace on the model.
        state = [v.numpy() for v in self.model.non_trainable_weights]
        try:
            logits = [np.asarray(self._training_call(tf.constant(self.images[i:i + self.train_batch_size])))
                      for i in range(0, len(self.images), self.train_batch_size)]
        finally:
            for variable, value in zip(self.model.non_trainable_weights, state):
                variable.assign(value)
        return np.argmax(np.concatenate(logits), axis=-1)

    def measure(self) -> dict:
        """The shares for the model as it is now (inference mode; and training mode if asked)."""
        predicted = self._predicted(training=False)
        if self.keep_predictions:
            self.predictions.append(predicted.astype(np.int32))
        out = memorization_metrics(predicted, self.noisy_labels, self.clean_labels, self.corrupted)
        if self.training_mode:
            trained = memorization_metrics(self._predicted(training=True), self.noisy_labels, self.clean_labels,
                                           self.corrupted)
            out.update({f"trainmode_{k}": v for k, v in trained.items()})
        return out

    def on_epoch_end(self, epoch, logs=None):
        values = self.measure()
        self.history["epoch"].append(int(epoch))
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)
        if logs is not None:
            logs.update(values)

    def no_memorization_level(self, num_classes: int) -> list[float]:
        """Per epoch, the memorized share of a model that learned none of the wrong labels and spread its
        errors on the corrupted examples evenly over the other classes: ``(1 - corrected) / (C - 1)``."""
        return [(1.0 - c) / (num_classes - 1) for c in self.history.get("corrected", [])]

    def plot(self, ax=None, label: str | None = None):
        """Draws ``memorized`` (solid) and ``corrected`` (dashed) in % against the epoch; returns the axes."""
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(6, 4))
        if "memorized" not in self.history:
            raise ValueError("nothing to plot: no epoch recorded yet, or no corrupted example among those scored")
        epochs = [e + 1 for e in self.history["epoch"]]
        prefix = f"{label}: " if label else ""
        line, = ax.plot(epochs, [100 * v for v in self.history["memorized"]],
                        label=f"{prefix}predicted as their wrong label")
        ax.plot(epochs, [100 * v for v in self.history["corrected"]], linestyle="--", color=line.get_color(),
                label=f"{prefix}predicted as their true label")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"% of the {self.corrupted_count} corrupted examples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return ax
