"""The chief of the multi-process cluster test: SNEP on the conjugate problem, K = 2.

Run as `python -m tests.distributed.conjugate_chief ROUNDS` with `TF_CONFIG` naming this task
the chief; the workers run XLA-compiled rounds. Runs rounds until every site has done at least
ROUNDS of its own (while a worker is down, the other worker takes all rounds and the dead
worker's site waits). Prints `round r` after each round and, at the end, one JSON line with the
global mean and covariance, the iterations each site has done, the rounds run and the rejected
updates. It leaves with `os._exit`: after a worker restart the coordinator's shutdown can hang at
interpreter exit.
"""

import itertools
import json
import os
import sys

import tf_keras

import tfp_ext
from tests.distributed import conjugate_problem


def main(num_rounds: int) -> None:
  shards, _, _ = conjugate_problem.problem(2)
  learner = conjugate_problem.server(
      shards, strategy=tfp_ext.distributed.strategy_from_tf_config(), jit_compile=True)
  count = itertools.count(1)
  progress = tf_keras.callbacks.LambdaCallback(
      on_epoch_end=lambda r, logs: print(f"round {next(count)}", flush=True))
  rounds = 0
  iters = conjugate_problem.SETTINGS["iters_per_sync"]
  while learner.state_variable.numpy()[:, -1].min() < num_rounds * iters:
    learner.fit(2, callbacks=[progress], verbose=0, timeout=300)
    rounds += 2
  mean, cov = learner.family.mean_and_covariance(learner.global_natural())
  print(json.dumps({"mean": mean.numpy().tolist(), "cov": cov.numpy().tolist(),
                    "iterations": learner.state_variable.numpy()[:, -1].tolist(),
                    "rounds": rounds, "rejected": learner.rejected}), flush=True)


if __name__ == "__main__":
  try:
    main(int(sys.argv[1]))
  finally:
    sys.stdout.flush()
    os._exit(0)  # pylint: disable=protected-access
