"""Prometheus metrics of the predict path (`--monitoring_config_file`), as TF Serving exports them.

TF Serving's names, on the REST port at the configured path (by default
`/monitoring/prometheus/metrics`):

* `:tensorflow:serving:request_count{model_name, model_version, signature_name, entrypoint,
  status}`: requests answered, by status code name (OK, INVALID_ARGUMENT, ...);
* `:tensorflow:serving:request_latency{model_name, model_version, signature_name, entrypoint}`:
  a histogram of the time from a parsed request to its answer, in microseconds (TF Serving's
  unit);
* `:tensorflow:serving:batching_session:input_batch_size` and `:...:padding_size`
  `{model_name, model_version, signature_name}`: histograms of the rows of each batch run and of
  the padding added to it, with `--enable_batching`.

Each server has its own registry, so servers in one process do not share counts.
"""

import dataclasses

from tfp_ext.serving.model_config import parse_text_proto

__all__ = ["Metrics", "MonitoringConfig", "parse_monitoring_config", "read_monitoring_config_file"]

DEFAULT_PATH = "/monitoring/prometheus/metrics"
_LATENCY_BUCKETS_US = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
                       500000, 1000000, 2500000, 5000000, 10000000)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
  """TF Serving's `MonitoringConfig`: `prometheus_config { enable: true path: "..." }`."""
  enable: bool = False
  path: str = DEFAULT_PATH

  def __post_init__(self):
    if not self.path.startswith("/") or self.path.startswith("/v1/"):
      raise ValueError(f"The Prometheus path must start with '/' and not with '/v1/', got "
                       f"{self.path!r}.")


def parse_monitoring_config(text: str) -> MonitoringConfig:
  fields = parse_text_proto(text)
  unknown = sorted(set(fields) - {"prometheus_config"})
  if unknown:
    raise ValueError(f"Unsupported field(s) {unknown} in the monitoring config.")
  config = (fields.get("prometheus_config") or [{}])[-1]
  if not isinstance(config, dict):
    raise ValueError("Write the monitoring config as `prometheus_config { enable: true }`.")
  unknown = sorted(set(config) - {"enable", "path"})
  if unknown:
    raise ValueError(f"Unsupported field(s) {unknown} in prometheus_config.")
  enable = config.get("enable", ["false"])[-1]
  if enable not in ("true", "false"):
    raise ValueError(f"prometheus_config.enable must be true or false, got {enable!r}.")
  path = config.get("path", [DEFAULT_PATH])[-1] or DEFAULT_PATH
  if not isinstance(path, str):
    raise ValueError(f"prometheus_config.path must be a string, got {path!r}.")
  return MonitoringConfig(enable == "true", path)


def read_monitoring_config_file(path: str) -> MonitoringConfig:
  with open(path, encoding="utf-8") as f:
    return parse_monitoring_config(f.read())


class Metrics:
  """The server's metrics in a registry of its own; `render()` is the Prometheus text page."""

  def __init__(self):
    import prometheus_client as prom  # pylint: disable=g-import-not-at-top
    self._prom = prom
    self.registry = prom.CollectorRegistry()
    labels = ["model_name", "model_version", "signature_name", "entrypoint"]
    self.request_count = prom.Counter(
        ":tensorflow:serving:request_count", "Predict requests answered, by status.",
        labels + ["status"], registry=self.registry)
    self.request_latency = prom.Histogram(
        ":tensorflow:serving:request_latency", "Predict latency in microseconds.", labels,
        buckets=_LATENCY_BUCKETS_US, registry=self.registry)
    batch_labels = ["model_name", "model_version", "signature_name"]
    self.batch_size = prom.Histogram(
        ":tensorflow:serving:batching_session:input_batch_size",
        "Rows of each batch run (before padding).", batch_labels, buckets=_BATCH_BUCKETS,
        registry=self.registry)
    self.padding_size = prom.Histogram(
        ":tensorflow:serving:batching_session:padding_size", "Padding rows added to each batch.",
        batch_labels, buckets=(0,) + _BATCH_BUCKETS, registry=self.registry)

  def observe_request(self, model: str, version: str, signature: str, entrypoint: str,
                      status: str, seconds: float) -> None:
    self.request_count.labels(model, version, signature, entrypoint, status).inc()
    if status == "OK":
      self.request_latency.labels(model, version, signature, entrypoint).observe(seconds * 1e6)

  def observe_batch(self, model: str, version: str, signature: str, rows: int,
                    padded: int) -> None:
    self.batch_size.labels(model, version, signature).observe(rows)
    self.padding_size.labels(model, version, signature).observe(padded - rows)

  def render(self) -> bytes:
    return self._prom.generate_latest(self.registry)

  @property
  def content_type(self) -> str:
    return self._prom.CONTENT_TYPE_LATEST
