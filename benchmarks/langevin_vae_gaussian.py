"""The Langevin VAE on the Gaussian model of Caterini et al. (2018), Section 4.1.

The experiment, data sets, optimizer, error measure and tables are those of `hvae_gaussian`
(see its docstring): theta = (Delta, log sigma) learned by maximizing each method's ELBO from
Delta = 0, log sigma = 3, error ||Delta_hat - Delta||^2 + ||sigma_hat - sigma||^2. This module
adds the Langevin VAE to it (through `hvae_gaussian.EXTRA_METHODS`) and times every method:

* LVAE K (K = 1, 10): `LangevinFlow` with K quasi-symplectic steps and injected noise
  (Wang & Delingette, 2021), q_0 = N(0, I), learned per-dimension step sizes h in (0, 0.5)
  (start 0.005, as the HVAE's eps) and a learned friction gamma = softplus(.) (start 0.1),
  trained on `tfp_ext.vi.langevin_elbo`.
* HVAE-T 10 and VB, as in `hvae_gaussian`, in the same run.

The wall time of a (method, d) is one XLA compilation plus all its runs' iterations. Each LVAE
step evaluates the target gradient once, each leapfrog step of the HVAE twice less the one
reused across steps (K + 1 in all), so at equal K the LVAE does about half the gradient work.

`main()` runs d = 1, 3, 11, 51 with one run of 10,000 iterations (~10 minutes on 2 cores);
`report(dims, runs, iterations)` runs any other sweep, e.g. the paper's 30,000 iterations.
"""

import math
import time

import numpy as np
import tensorflow as tf

from benchmarks import hvae_gaussian
from tfp_ext.bijectors import LangevinFlow
from tfp_ext.vi import langevin_elbo

METHODS = ("LVAE 1", "LVAE 10", "HVAE-T 10", "VB")
MAX_STEP = hvae_gaussian.MAX_STEP


def _initial_variables(method, d, rng):
  del method, rng
  return {"logit_h": np.full(d, math.log(0.005 / (MAX_STEP - 0.005))),
          "raw_gamma": np.array(math.log(math.expm1(0.1)))}


def _negative_elbo(method, v, log_joint, prior, seed):
  flow = LangevinFlow(log_joint, num_steps=int(method.split()[-1]),
                      step_size=MAX_STEP * tf.sigmoid(v["logit_h"]),
                      friction=tf.math.softplus(v["raw_gamma"]))
  return -langevin_elbo(log_joint, prior, flow, hvae_gaussian.NUM_SAMPLES, seed).elbo


hvae_gaussian.EXTRA_METHODS["LVAE"] = (_initial_variables, _negative_elbo)


def report(dims, num_runs, num_iters, methods=METHODS):
  """Trains `methods` on `num_runs` data sets per d; prints errors and wall times."""
  print(f"N = {hvae_gaussian.N_DATA}, runs = {num_runs}, iterations = {num_iters}, "
        f"{hvae_gaussian.NUM_SAMPLES} samples per ELBO, RMSProp lr "
        f"{hvae_gaussian.LEARNING_RATE}", flush=True)
  errors = {m: {} for m in methods}
  seconds = {m: {} for m in methods}
  for d in dims:
    for m in methods:
      t0 = time.time()
      errors[m].update(hvae_gaussian.run((d,), num_runs, num_iters, (m,), log=lambda s: None)[m])
      seconds[m][d] = time.time() - t0
      print(f"  d={d:<4d} {m:<10s} error {hvae_gaussian._totals(errors[m][d]).mean():.4g}, "
            f"{seconds[m][d]:.1f} s", flush=True)
  hvae_gaussian.print_tables(errors, dims, methods)
  print("\nWall time per (method, d) in seconds (one XLA compilation + all runs):\n")
  print("| d | " + " | ".join(methods) + " |\n" + "|---" * (len(methods) + 1) + "|")
  for d in dims:
    print(f"| {d} | " + " | ".join(f"{seconds[m][d]:.1f}" for m in methods) + " |")
  return errors, seconds


def main(quick: bool = False) -> None:
  if quick:
    report((1, 3), 1, 300)
    return
  report((1, 3, 11, 51), 1, 10_000)


if __name__ == "__main__":
  main()
