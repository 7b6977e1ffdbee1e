"""A parameter-server cluster of `tf.distribute.Server`s in this process, on loopback ports.

For tests, notebooks and trying the posterior server on one machine; a real cluster runs the
same strategy from `TF_CONFIG`. The worker servers get extra inter-op threads
(`worker_server_config`): with too few, scheduled closures deadlock on a small machine.
"""

import socket

import tensorflow as tf

from tfp_ext.internal.validation import check_int

__all__ = ["LocalCluster", "worker_server_config"]


def worker_server_config(num_workers: int) -> tf.compat.v1.ConfigProto:
  """The config of a worker's `tf.distribute.Server`: 4·workers + 1 inter-op threads.

  Plain closures need workers + 1 on a 2-core host (fewer deadlock, as TF's own in-process
  cluster helper also knows); with the posterior server's 2K closures in flight and XLA
  compiling on the worker, a one-worker cluster was once seen to hang at 2 threads, and never
  at 4K + 1.
  """
  return tf.compat.v1.ConfigProto(inter_op_parallelism_threads=4 * num_workers + 1)


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class LocalCluster:
  """`num_workers` worker and `num_ps` parameter-server tasks on 127.0.0.1, and their strategy.

  #### Examples

  ```python
  cluster = tfp_ext.distributed.LocalCluster(num_workers=2)
  learner = tfp_ext.distributed.PosteriorServer(..., strategy=cluster.strategy())
  ```
  """

  def __init__(self, num_workers: int, num_ps: int = 1):
    self.num_workers = check_int("num_workers", num_workers)
    self.num_ps = check_int("num_ps", num_ps)
    spec = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(self.num_workers)],
            "ps": [f"127.0.0.1:{_free_port()}" for _ in range(self.num_ps)]}
    self.cluster_spec = tf.train.ClusterSpec(spec)
    worker_config = worker_server_config(self.num_workers)
    self.servers = [
        tf.distribute.Server(self.cluster_spec, job_name="worker", task_index=i,
                             config=worker_config, protocol="grpc")
        for i in range(self.num_workers)] + [
        tf.distribute.Server(self.cluster_spec, job_name="ps", task_index=i, protocol="grpc")
        for i in range(self.num_ps)]

  def strategy(self):
    """A `ParameterServerStrategy` whose coordinator is this process."""
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        self.cluster_spec, rpc_layer="grpc")
    return tf.distribute.experimental.ParameterServerStrategy(resolver)
