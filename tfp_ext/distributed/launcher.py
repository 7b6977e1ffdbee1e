"""The tasks of a posterior-server cluster as separate processes, from `TF_CONFIG`.

A real cluster runs one process per task: K workers and one or more parameter servers run
`tfp-ext posterior-server` (a `tf.distribute.Server` that serves until killed), and the chief
runs the training program, whose `PosteriorServer` gets `strategy_from_tf_config()`. Every
process reads the same cluster from `TF_CONFIG` (TF's convention):

```none
TF_CONFIG='{"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"],
            "ps": ["host3:2222"]}, "task": {"type": "worker", "index": 0}}'
```

`--job_name`/`--task_index` (the names of TF's classic launcher flags) override the task, so one
`TF_CONFIG` of the cluster can be exported on every host.
"""

import json
import os
from typing import Optional

import tensorflow as tf

from tfp_ext.distributed.local_cluster import worker_server_config

__all__ = ["cluster_from_tf_config", "run_task", "strategy_from_tf_config"]


def cluster_from_tf_config(job_name: Optional[str] = None, task_index: Optional[int] = None):
  """(ClusterSpec, job name, task index) from `TF_CONFIG`, the task overridden if given."""
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    raise ValueError("TF_CONFIG is not set: it names the cluster's tasks (see "
                     "tfp_ext.distributed.launcher).")
  try:
    config = json.loads(raw)
    cluster = tf.train.ClusterSpec(config["cluster"])
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"TF_CONFIG is not a cluster description: {e}") from e
  task = config.get("task", {})
  job_name = job_name or task.get("type")
  task_index = task.get("index", 0) if task_index is None else task_index
  if job_name not in cluster.jobs:
    raise ValueError(f"The cluster has jobs {cluster.jobs}, not {job_name!r}.")
  if not 0 <= task_index < cluster.num_tasks(job_name):
    raise ValueError(f"Job {job_name!r} has {cluster.num_tasks(job_name)} tasks, no task "
                     f"{task_index}.")
  return cluster, job_name, task_index


def run_task(job_name: Optional[str] = None, task_index: Optional[int] = None) -> None:
  """Serves this process's worker or parameter-server task until the process is killed.

  Worker servers get extra inter-op threads (`local_cluster.worker_server_config`): with too few,
  the coordinator's closures can deadlock on a small host.
  """
  cluster, job_name, task_index = cluster_from_tf_config(job_name, task_index)
  if job_name not in ("worker", "ps"):
    raise ValueError(f"`tfp-ext posterior-server` runs worker and ps tasks; the {job_name!r} "
                     "task runs the training program (with strategy_from_tf_config()).")
  config = None
  if job_name == "worker":
    config = worker_server_config(cluster.num_tasks("worker"))
  server = tf.distribute.Server(cluster, job_name=job_name, task_index=task_index,
                                config=config, protocol="grpc", start=True)
  print(f"posterior-server: {job_name} {task_index} serving at "
        f"{cluster.task_address(job_name, task_index)}", flush=True)
  server.join()


def strategy_from_tf_config() -> tf.distribute.experimental.ParameterServerStrategy:
  """The chief's `ParameterServerStrategy` over the cluster in `TF_CONFIG`."""
  cluster_from_tf_config()  # Clear errors for a missing or malformed TF_CONFIG.
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  return tf.distribute.experimental.ParameterServerStrategy(resolver)
