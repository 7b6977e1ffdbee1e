"""Run benchmarks by name: `python -m benchmarks [NAME ...] [--quick]`; no name runs them all.

Each benchmark is a module `benchmarks/<NAME>.py` with `main(quick: bool) -> None` that prints its
own table of ratios against the baseline it measures in the same run.
"""

import argparse
import importlib
import pkgutil
import platform
import time

import benchmarks


def _names():
  return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                if not m.name.startswith("_"))


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
  parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {_names()})")
  parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
  args = parser.parse_args(argv)
  names = args.names or _names()
  unknown = sorted(set(names) - set(_names()))
  if unknown:
    parser.error(f"unknown benchmark(s) {unknown}; available: {_names()}")
  print(f"# {time.strftime('%Y-%m-%d')} on {platform.node()} ({platform.processor() or platform.machine()},"
        f" python {platform.python_version()})")
  for name in names:
    print(f"\n## {name}")
    importlib.import_module(f"benchmarks.{name}").main(quick=args.quick)


if __name__ == "__main__":
  main()
