"""The posterior server as separate processes launched from TF_CONFIG, with a worker SIGKILLed.

One parameter server and two workers run `tfp-ext posterior-server` (TF's gRPC servers), the chief
runs `tests.distributed.conjugate_chief`; all on 127.0.0.1, the rounds XLA-compiled on the workers
(this is also the suite's check of the asynchronous cluster and of compiled rounds on it). After round 2, worker 1 is killed and
restarted on its port. The coordinator reschedules the closures that died with it, so the run
still ends at the exact posterior (the fixed point with exact tilted moments does not depend on the
order of updates) and every scheduled site round was applied: the sites' iteration counts add up
to rounds × K × iters_per_sync (at least: a write that landed just before its worker died and was
rescheduled would add one round more). The chief runs until each site has done ROUNDS rounds.
"""

import json
import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from tests.distributed import conjugate_problem

ROUNDS = 16
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _launcher():
  script = pathlib.Path(sys.executable).with_name("tfp-ext")
  return [str(script)] if script.exists() else [sys.executable, "-m", "tfp_ext.cli"]


class _Lines:
  """A process's output lines, read in the background so that waits can time out."""

  def __init__(self, process):
    self.lines = queue.Queue()
    threading.Thread(target=lambda: [self.lines.put(l) for l in process.stdout], daemon=True).start()

  def wait_for(self, predicate, timeout):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
      try:
        line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
      except queue.Empty:
        break
      seen.append(line)
      if predicate(line):
        return line
    raise AssertionError(f"Timed out after {timeout} s; the process printed:\n{''.join(seen)}")


def test_killed_worker_loses_no_update_and_the_run_reaches_the_exact_posterior(tmp_path):
  chief, w0, w1, ps = _free_ports(4)
  cluster = {"chief": [f"127.0.0.1:{chief}"], "ps": [f"127.0.0.1:{ps}"],
             "worker": [f"127.0.0.1:{w0}", f"127.0.0.1:{w1}"]}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  processes = {}

  def start(name, args, task):
    task_env = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": task}))
    log = open(tmp_path / f"{name}.log", "ab")
    processes[name] = subprocess.Popen(args, env=task_env, cwd=ROOT, stdout=log,
                                       stderr=subprocess.STDOUT)

  def start_task(job, index):
    # The cluster in TF_CONFIG, the task from the launcher's flags.
    start(f"{job}{index}", _launcher() + ["posterior-server", f"--job_name={job}",
                                          f"--task_index={index}"], {})

  try:
    start_task("ps", 0)
    start_task("worker", 0)
    start_task("worker", 1)
    processes["chief"] = subprocess.Popen(
        [sys.executable, "-m", "tests.distributed.conjugate_chief", str(ROUNDS)],
        env=dict(env, TF_CONFIG=json.dumps({"cluster": cluster,
                                            "task": {"type": "chief", "index": 0}})),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = _Lines(processes["chief"])
    lines.wait_for(lambda line: line.startswith("round 2"), timeout=180)
    processes["worker1"].send_signal(signal.SIGKILL)
    processes["worker1"].wait(timeout=30)
    time.sleep(1.0)
    start_task("worker", 1)
    result = json.loads(lines.wait_for(lambda line: line.startswith("{"), timeout=300))
    assert processes["chief"].wait(timeout=30) == 0
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
        process.wait(timeout=30)

  _, mean, cov = conjugate_problem.problem(2)
  np.testing.assert_allclose(result["mean"], mean, atol=1e-9)
  np.testing.assert_allclose(result["cov"], cov, atol=1e-9)
  assert result["rejected"] == 0
  expected = result["rounds"] * 2 * conjugate_problem.SETTINGS["iters_per_sync"]
  assert sum(result["iterations"]) >= expected, result["iterations"]
