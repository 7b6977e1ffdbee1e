"""Timing helpers shared by the step-time benchmarks."""

import statistics
import time

import numpy as np
import tf_keras


class StepTimer(tf_keras.callbacks.Callback):
  """Median seconds between consecutive batch ends (the first step is excluded)."""

  def on_train_begin(self, logs=None):
    self.ends = []

  def on_train_batch_end(self, batch, logs=None):
    self.ends.append(time.perf_counter())

  def per_step(self):
    return statistics.median(np.diff(self.ends))
