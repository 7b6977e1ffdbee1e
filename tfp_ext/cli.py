"""The `tfp-ext` command: `check` an export, `serve` exports over REST and gRPC, run the
`quickstart`, run a `posterior-server` cluster task."""

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

__all__ = ["main"]


def _check(args) -> int:
  from tfp_ext.serving.check import CheckError, check_many  # pylint: disable=g-import-not-at-top
  try:
    results = check_many(args.export_dir,
                         xla_cpu_compilation_enabled=args.xla_cpu_compilation_enabled)
  except CheckError as e:
    print(f"FAIL\n  {e}", file=sys.stderr)
    return 1
  for result in results:
    print(result.summary())
  return 0 if all(r.ok for r in results) else 1


def _serve(args) -> int:
  from tfp_ext.serving.server import Server  # pylint: disable=g-import-not-at-top
  if args.model_config_file and (args.model_name or args.model_base_path):
    raise SystemExit("Give either --model_config_file or --model_name/--model_base_path.")
  if not args.model_config_file and not args.model_base_path:
    raise SystemExit("Give --model_base_path (with --model_name) or --model_config_file.")
  if args.batching_parameters_file and not args.enable_batching:
    raise SystemExit("--batching_parameters_file needs --enable_batching.")
  models = None
  if args.model_base_path:
    models = {args.model_name or "default": args.model_base_path}
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  batching = None
  if args.enable_batching:
    from tfp_ext.serving.batching import BatchingParameters  # pylint: disable=g-import-not-at-top
    batching = args.batching_parameters_file or BatchingParameters()
  try:
    # Port 0 turns an API off, as tensorflow_model_server's --rest_api_port=0.
    server = Server(models=models, model_config_file=args.model_config_file,
                    host=args.rest_api_host, port=args.rest_api_port or None,
                    file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
                    max_body_bytes=args.max_body_bytes, num_threads=args.rest_api_num_threads,
                    grpc_port=args.port or None, grpc_host=args.grpc_host,
                    grpc_max_message_bytes=args.grpc_max_message_bytes,
                    grpc_max_threads=args.grpc_max_threads, batching=batching,
                    monitoring=args.monitoring_config_file,
                    max_json_depth=args.max_json_depth,
                    max_rows_per_request=args.max_rows_per_request)
  except (ValueError, OSError) as e:
    raise SystemExit(f"tfp-ext serve: {e}") from e
  try:
    server.serve_forever()
  except OSError as e:  # A port already taken.
    raise SystemExit(f"tfp-ext serve: {e}") from e
  return 0


def _quickstart(args) -> int:
  from tfp_ext import quickstart  # pylint: disable=g-import-not-at-top
  quickstart.run(output_dir=args.output_dir, epochs=args.epochs, serve=not args.no_serve)
  return 0


def _posterior_server(args) -> int:
  from tfp_ext.distributed import launcher  # pylint: disable=g-import-not-at-top
  try:
    launcher.run_task(args.job_name, args.task_index)
  except ValueError as e:
    raise SystemExit(f"tfp-ext posterior-server: {e}") from e
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of the `tfp-ext` console script."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  parser = argparse.ArgumentParser(prog="tfp-ext", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("check", help="load exports as tensorflow_model_server does and run them",
                     description="Loads each EXPORT_DIR with TF's C++ SavedModel loader (C API, "
                     "tag 'serve') in a process with XLA JIT disabled, runs every signature on a "
                     "dummy batch and verifies batch-first outputs. Exit status 1 on failure.")
  p.add_argument("export_dir", nargs="+", help="SavedModel version directory, e.g. "
                 "serving/models/quickstart/1")
  p.add_argument("--xla_cpu_compilation_enabled", action="store_true",
                 help="keep XLA JIT enabled, as a server started with this flag")
  p.set_defaults(fn=_check)

  p = sub.add_parser("serve", help="serve exports over TF Serving's REST and gRPC APIs",
                     description="A local server speaking TF Serving's REST and gRPC APIs. Flag "
                     "names as tensorflow_model_server's.")
  p.add_argument("--model_name", default=None, help="name in the URLs (default 'default')")
  p.add_argument("--model_base_path", default=None, help="directory holding <version>/ exports")
  p.add_argument("--model_config_file", default=None,
                 help="a ModelServerConfig text proto listing several models")
  p.add_argument("--port", type=int, default=8500, help="gRPC port (0: no gRPC)")
  p.add_argument("--grpc_host", default="127.0.0.1",
                 help="address gRPC binds (default 127.0.0.1: local connections only)")
  p.add_argument("--grpc_max_message_bytes", type=int, default=16 * 1024 * 1024,
                 help="larger gRPC messages are refused with RESOURCE_EXHAUSTED")
  p.add_argument("--grpc_max_threads", type=int, default=64, help="gRPC calls handled at once")
  p.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0: no REST)")
  p.add_argument("--rest_api_host", default="127.0.0.1",
                 help="address to bind (default 127.0.0.1: local connections only)")
  p.add_argument("--rest_api_num_threads", type=int, default=8, help="concurrent model calls")
  p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                 help="how often to look for new versions (0: never)")
  p.add_argument("--max_body_bytes", type=int, default=16 * 1024 * 1024,
                 help="larger request bodies are refused with HTTP 413")
  p.add_argument("--max_json_depth", type=int, default=64,
                 help="REST bodies nesting arrays/objects deeper are refused with HTTP 400")
  p.add_argument("--max_rows_per_request", type=int, default=100_000,
                 help="requests with more rows are refused (HTTP 400 / INVALID_ARGUMENT)")
  p.add_argument("--enable_batching", action="store_true",
                 help="merge concurrent predict requests into batches")
  p.add_argument("--batching_parameters_file", default=None,
                 help="a BatchingParameters text proto, e.g. serving/batching.config")
  p.add_argument("--monitoring_config_file", default=None,
                 help="a MonitoringConfig text proto; prometheus_config { enable: true } serves "
                 "/monitoring/prometheus/metrics on the REST port")
  p.set_defaults(fn=_serve)

  p = sub.add_parser("quickstart",
                     help="train, plot, export, check, serve and query a Bayesian MLP",
                     description="Trains a small Bayesian MLP with Vadam on a 1-D regression with "
                     "a gap, writes quickstart.png, exports to serving/models/quickstart/<version>,"
                     " checks the export, serves it locally and sends one REST request.")
  p.add_argument("--output_dir", default=".", help="where quickstart.png and serving/ go")
  p.add_argument("--epochs", type=int, default=None, help="training epochs (default: built in)")
  p.add_argument("--no_serve", action="store_true", help="stop after the export and check")
  p.set_defaults(fn=_quickstart)

  p = sub.add_parser("posterior-server",
                     help="run a worker or parameter-server task of a posterior-server cluster",
                     description="Starts this process's task of the cluster in TF_CONFIG (a "
                     "tf.distribute.Server) and serves until killed. The chief runs the training "
                     "program, with tfp_ext.distributed.strategy_from_tf_config().")
  p.add_argument("--job_name", choices=("worker", "ps"), default=None,
                 help="the task's job (default: TF_CONFIG's task type)")
  p.add_argument("--task_index", type=int, default=None,
                 help="the task's index in its job (default: TF_CONFIG's task index)")
  p.set_defaults(fn=_posterior_server)

  args = parser.parse_args(argv)
  return args.fn(args)


if __name__ == "__main__":
  sys.exit(main())
