"""Permutation alignment of two weight posteriors of the same network (Rossi et al., 2023)."""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
import tf_keras
from scipy.optimize import linear_sum_assignment

from tfp_ext.internal.validation import check_int
from tfp_ext.posterior.mean_field_gaussian import MeanFieldGaussian
from tfp_ext.posterior.sample_ensemble import SampleEnsemble

__all__ = ["AlignmentReport", "Permutation", "align", "squared_wasserstein_distance"]

_layers = tf_keras.layers

# Layers whose weights have one axis per unit space: the kernel's input axis and output axis.
_KERNEL_LAYERS = (_layers.Dense, _layers.Conv1D, _layers.Conv2D, _layers.Conv3D)
# Layers that act on each unit (channel) alone, or on the spatial axes only: the units keep their
# space, so a permutation of their input permutes their output the same way.
_UNITWISE_LAYERS = (
    _layers.Activation, _layers.ReLU, _layers.LeakyReLU, _layers.ELU, _layers.ThresholdedReLU,
    _layers.Dropout, _layers.SpatialDropout1D, _layers.SpatialDropout2D, _layers.SpatialDropout3D,
    _layers.GaussianNoise, _layers.GaussianDropout, _layers.AlphaDropout,
    _layers.MaxPooling1D, _layers.MaxPooling2D, _layers.MaxPooling3D,
    _layers.AveragePooling1D, _layers.AveragePooling2D, _layers.AveragePooling3D,
    _layers.GlobalAveragePooling1D, _layers.GlobalAveragePooling2D, _layers.GlobalAveragePooling3D,
    _layers.GlobalMaxPooling1D, _layers.GlobalMaxPooling2D, _layers.GlobalMaxPooling3D,
    _layers.ZeroPadding1D, _layers.ZeroPadding2D, _layers.ZeroPadding3D,
    _layers.Cropping1D, _layers.Cropping2D, _layers.Cropping3D,
    _layers.UpSampling1D, _layers.UpSampling2D, _layers.UpSampling3D)
# Elementwise merges: their inputs must share one permutation (a residual stream).
_MERGE_LAYERS = (_layers.Add, _layers.Subtract, _layers.Average, _layers.Maximum,
                 _layers.Minimum, _layers.Multiply)
_NORMALIZATION_LAYERS = (_layers.BatchNormalization, _layers.LayerNormalization)
_SUPPORTED = ("Dense, Conv1D/2D/3D, BatchNormalization, LayerNormalization (last axis), Flatten, "
              "Add/Subtract/Average/Maximum/Minimum/Multiply, and unit-wise layers (activations, "
              "dropout, noise, pooling, padding, cropping, upsampling)")


@dataclasses.dataclass(frozen=True)
class _AxisMove:
  """Axis `axis` of a weight, seen as `[length // channels, channels]`, moves with `group`."""
  group: int
  axis: int
  channels: int


@dataclasses.dataclass(frozen=True)
class _WeightSpec:
  """One variable of the model (`slot` in `model.weights`) and the unit axes it carries."""
  name: str
  slot: int
  trainable_index: Optional[int]
  shape: Tuple[int, ...]
  moves: Tuple[_AxisMove, ...]


@dataclasses.dataclass(frozen=True)
class _Group:
  """A set of units that one permutation acts on (a layer's units, or a residual stream)."""
  name: str
  size: int
  layers: Tuple[str, ...]


class _UnionFind:

  def __init__(self):
    self.parent, self.fixed, self.size, self.layers = [], [], [], []

  def new(self, size, layer_name, fixed=False):
    self.parent.append(len(self.parent))
    self.fixed.append(fixed)
    self.size.append(size)
    self.layers.append([layer_name] if layer_name else [])
    return len(self.parent) - 1

  def find(self, i):
    while self.parent[i] != i:
      self.parent[i] = self.parent[self.parent[i]]
      i = self.parent[i]
    return i

  def union(self, i, j):
    i, j = self.find(i), self.find(j)
    if i != j:
      i, j = min(i, j), max(i, j)
      self.parent[j] = i
      self.fixed[i] = self.fixed[i] or self.fixed[j]
      self.layers[i] += self.layers[j]
    return i


def _unsupported(layer, why=""):
  return ValueError(
      f"Cannot align layer {layer.name!r} ({type(layer).__name__}){': ' + why if why else ''}. "
      f"Alignment permutes hidden units of {_SUPPORTED}; attention, recurrent, embedding and "
      "other layers are not supported.")


def _single(value, layer):
  if isinstance(value, (list, tuple)):
    if len(value) != 1:
      raise _unsupported(layer, f"it takes {len(value)} inputs")
    return value[0]
  return value


def _parse(model) -> Tuple[List[_Group], List[_WeightSpec]]:
  """The unit groups of a Sequential or functional tf_keras model and the weight axes they move.

  Every tensor's last axis belongs to a unit space: the model's inputs and outputs are fixed, each
  Dense or Conv layer creates a new space, unit-wise layers keep theirs, and merges join the
  spaces of their inputs (one permutation for a whole residual stream). `Flatten` keeps the space
  of its channels, repeated once per spatial position.
  """
  if not isinstance(model, tf_keras.Model):
    raise ValueError(f"`model` must be a tf_keras Model, got {type(model).__name__}.")
  if not getattr(model, "_is_graph_network", False) or not model.inputs:
    raise ValueError(
        f"`model` {model.name!r} must be a built Sequential or functional tf_keras model (give "
        "Sequential an `input_shape` or an `Input`); subclassed models hide their layer graph.")
  uf = _UnionFind()
  space = {}  # id(KerasTensor) -> (space, copies of the channels along the last axis)
  for t in model.inputs:
    space[id(t)] = (uf.new(int(t.shape[-1] or 0), "", fixed=True), 1)
  moves = {}  # id(variable) -> (variable, layer, [(space, axis, channels)])
  trainable_index = {id(v): i for i, v in enumerate(model.trainable_variables)}

  def tie(layer, variable, s, axis, copies=1):
    if variable is None:
      return
    entry = moves.setdefault(id(variable), (variable, layer, []))
    entry[2].append((s, axis % len(variable.shape), int(variable.shape[axis]) // copies))

  for layer in model.layers:
    if isinstance(layer, tf_keras.layers.InputLayer):
      continue
    if isinstance(layer, tf_keras.Model):
      raise _unsupported(layer, "nested models are not traversed; build one functional model")
    if len(layer._inbound_nodes) != 1:  # pylint: disable=protected-access
      raise _unsupported(layer, "it is called more than once (shared layers)")
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    if any(id(t) not in space for t in inputs):
      raise _unsupported(layer, "one of its inputs does not come from the model's graph")
    output = layer.output
    kind = type(layer)
    if kind in _KERNEL_LAYERS:
      s_in, copies = space[id(_single(layer.input, layer))]
      if kind is not _layers.Dense:
        if copies != 1 or layer.data_format != "channels_last" or layer.groups != 1:
          raise _unsupported(layer, "only channels_last convolutions with groups=1")
      s_out = uf.new(int(output.shape[-1]), layer.name)
      rank = len(layer.kernel.shape)
      tie(layer, layer.kernel, s_in, rank - 2, copies)
      tie(layer, layer.kernel, s_out, rank - 1)
      tie(layer, layer.bias, s_out, 0)
      space[id(output)] = (s_out, 1)
    elif kind in _NORMALIZATION_LAYERS:
      s, copies = space[id(_single(layer.input, layer))]
      rank = len(output.shape)
      if [a % rank for a in layer.axis] != [rank - 1]:
        raise _unsupported(layer, f"only normalization over the last axis, got axis={layer.axis}")
      for v in (layer.gamma, layer.beta, getattr(layer, "moving_mean", None),
                getattr(layer, "moving_variance", None)):
        tie(layer, v, s, 0, copies)
      space[id(output)] = (s, copies)
    elif kind in _UNITWISE_LAYERS:
      if layer.weights:
        raise _unsupported(layer, "it has weights")
      if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _unsupported(layer, "only channels_last layers")
      space[id(output)] = space[id(_single(layer.input, layer))]
    elif kind is _layers.Flatten:
      if layer.data_format != "channels_last":
        raise _unsupported(layer, "only channels_last flattening")
      tensor = _single(layer.input, layer)
      s, copies = space[id(tensor)]
      spatial = tensor.shape[1:-1].num_elements() if len(tensor.shape) > 2 else 1
      if spatial is None:
        raise _unsupported(layer, "its input needs static spatial dimensions")
      space[id(output)] = (s, copies * spatial)
    elif kind in _MERGE_LAYERS:
      entries = [space[id(t)] for t in inputs]
      if len({c for _, c in entries}) != 1 or len({tuple(t.shape[1:]) for t in inputs}) != 1:
        raise _unsupported(layer, "its inputs have different shapes")
      s = entries[0][0]
      for other, _ in entries[1:]:
        s = uf.union(s, other)
      space[id(output)] = (s, entries[0][1])
    else:
      raise _unsupported(layer)
  for t in model.outputs:
    uf.fixed[uf.find(space[id(t)][0])] = True

  roots = {}
  groups = []
  for i in range(len(uf.parent)):
    r = uf.find(i)
    if r == i and not uf.fixed[r]:
      roots[r] = len(groups)
      members = uf.layers[r]
      name = members[0] if len(members) == 1 else "+".join(members)
      groups.append(_Group(name=name, size=uf.size[r], layers=tuple(members)))
  specs = []
  slot = {id(v): i for i, v in enumerate(model.weights)}
  for variable, layer, axes in moves.values():
    kept = tuple(_AxisMove(roots[uf.find(s)], axis, channels) for s, axis, channels in axes
                 if uf.find(s) in roots)
    if kept:
      specs.append(_WeightSpec(name=variable.name, slot=slot[id(variable)],
                               trainable_index=trainable_index.get(id(variable)),
                               shape=tuple(int(d) for d in variable.shape), moves=kept))
  return groups, specs


def _permute(x: np.ndarray, moves: Sequence[_AxisMove], perms: Sequence[np.ndarray],
             offset: int = 0, skip: Optional[_AxisMove] = None) -> np.ndarray:
  """Gathers each moved axis of `x` (after `offset` leading axes) by its group's permutation."""
  for m in moves:
    if m is skip:
      continue
    axis = m.axis + offset
    shape = x.shape
    view = x.reshape(shape[:axis] + (shape[axis] // m.channels, m.channels) + shape[axis + 1:])
    x = np.take(view, perms[m.group], axis=axis + 1).reshape(shape)
  return x


def _unit_rows(x: np.ndarray, move: _AxisMove) -> np.ndarray:
  """`x` as `[channels, everything else]`, the rows being the units of `move`'s group."""
  shape = x.shape
  view = x.reshape(shape[:move.axis] + (shape[move.axis] // move.channels, move.channels)
                   + shape[move.axis + 1:])
  return np.moveaxis(view, move.axis + 1, 0).reshape(move.channels, -1)


def _summary(q, label: str):
  """(means, stddevs) of a posterior as float64 NumPy arrays, one per weight part."""
  if isinstance(q, MeanFieldGaussian):
    loc, scale = q.loc, q.scale
  elif isinstance(q, SampleEnsemble):
    loc, scale = q.mean(), q.stddev()
  else:
    raise ValueError(f"`{label}` must be a MeanFieldGaussian or a SampleEnsemble, got "
                     f"{type(q).__name__}.")
  return ([np.asarray(t, np.float64) for t in loc], [np.asarray(t, np.float64) for t in scale])


def squared_wasserstein_distance(q_a, q_b) -> float:
  """W₂²(q_a, q_b) = Σ_i (μ_a,i − μ_b,i)² + (σ_a,i − σ_b,i)² between two mean-field Gaussians.

  The squared 2-Wasserstein distance between diagonal Gaussians (Rossi et al., 2023; for
  a `SampleEnsemble`, its per-weight mean and standard deviation stand in for μ and σ). This is
  the cost `align` minimizes over permutations.
  """
  (ma, sa), (mb, sb) = _summary(q_a, "q_a"), _summary(q_b, "q_b")
  if [m.shape for m in ma] != [m.shape for m in mb]:
    raise ValueError("q_a and q_b have different weight shapes: "
                     f"{[m.shape for m in ma]} vs {[m.shape for m in mb]}.")
  return float(sum(np.sum((a - b) ** 2) for a, b in zip(ma + sa, mb + sb)))


@dataclasses.dataclass(frozen=True)
class AlignmentReport:
  """How the coordinate descent ended.

  Attributes:
    converged: a full sweep over the groups changed no permutation.
    num_sweeps: sweeps run (at most `max_sweeps`).
    distances: the cost before alignment, after the forward initialization, then after each
      sweep (never increasing).
    cost: "wasserstein" or "means".
  """
  converged: bool
  num_sweeps: int
  distances: Tuple[float, ...]
  cost: str

  def __str__(self):
    state = "converged" if self.converged else "stopped at the cap, not converged"
    return (f"alignment ({self.cost}): {state} after {self.num_sweeps} sweep(s); distance "
            f"{self.distances[0]:.6g} -> {self.distances[-1]:.6g}")


class Permutation:
  """One permutation per group of hidden units of a model: a symmetry of the network.

  Applying it to a posterior of the model reorders the hidden units of every layer (the output
  axis of a layer's kernel and bias, the input axis of the next kernel, the parameters of the
  normalization layers on those units), so the network computes the same function under every
  weight sample. Returned by `align`.

  Attributes:
    permutations: `{group name: indices}`: unit `i` of the aligned posterior is unit
      `indices[i]` of the original.
    report: the `AlignmentReport` of the coordinate descent that found it (None for a
      permutation given by `from_indices` or `inverse`).
  """

  def __init__(self, groups: Sequence[_Group], specs: Sequence[_WeightSpec],
               perms: Sequence[np.ndarray], report: Optional[AlignmentReport],
               trainable_shapes: Sequence[Tuple[int, ...]], num_weights: int):
    self._groups = tuple(groups)
    self._specs = tuple(specs)
    self._perms = tuple(np.asarray(p, np.int64) for p in perms)
    self._trainable_shapes = tuple(trainable_shapes)
    self._num_weights = num_weights
    self.report = report

  @classmethod
  def from_indices(cls, model, permutations: Dict[str, Sequence[int]]) -> "Permutation":
    """A given permutation of `model`'s unit groups (`{group name: indices}`).

    Groups left out keep their order. `Permutation.from_indices(model, {}).permutations` lists
    the groups and their sizes; a random permutation makes a functionally identical copy of a
    posterior, e.g. to test alignment.

    Raises:
      ValueError: an unknown group name (the known ones are listed) or indices that are not a
        permutation of the group's units.
    """
    groups, specs = _parse(model)
    by_name = {g.name: i for i, g in enumerate(groups)}
    perms = [np.arange(g.size) for g in groups]
    for name, indices in permutations.items():
      if name not in by_name:
        raise ValueError(f"No unit group {name!r} in model {model.name!r}; its groups are "
                         f"{list(by_name)}.")
      indices = np.asarray(indices)
      size = groups[by_name[name]].size
      if indices.shape != (size,) or not np.array_equal(np.sort(indices), np.arange(size)):
        raise ValueError(f"The indices for group {name!r} must be a permutation of "
                         f"0..{size - 1}, got {indices.tolist()}.")
      perms[by_name[name]] = indices.astype(np.int64)
    return cls(groups, specs, perms, None,
               [tuple(v.shape.as_list()) for v in model.trainable_variables], len(model.weights))

  def inverse(self) -> "Permutation":
    """The permutation that undoes this one."""
    return Permutation(self._groups, self._specs, [np.argsort(p) for p in self._perms], None,
                       self._trainable_shapes, self._num_weights)

  @property
  def permutations(self) -> Dict[str, np.ndarray]:
    """`{group name: indices}`, in the order the groups' layers run."""
    return {g.name: p.copy() for g, p in zip(self._groups, self._perms)}

  @property
  def is_identity(self) -> bool:
    """Whether every group keeps its order."""
    return all(np.array_equal(p, np.arange(len(p))) for p in self._perms)

  def _check(self, q):
    shapes = [tuple(s.shape.as_list()) for s in q.variable_specs]
    if shapes != list(self._trainable_shapes):
      raise ValueError(f"The posterior's weight shapes {shapes} differ from those of the model "
                       f"this permutation was found for, {list(self._trainable_shapes)}.")

  def _permuted_parts(self, parts, offset):
    out = [np.asarray(p) for p in parts]
    for spec in self._specs:
      if spec.trainable_index is not None:
        out[spec.trainable_index] = _permute(out[spec.trainable_index], spec.moves, self._perms,
                                             offset)
    return out

  def apply(self, q: Union[MeanFieldGaussian, SampleEnsemble]):
    """The posterior with its hidden units permuted: a posterior of the same kind.

    Raises:
      ValueError: `q` is not a MeanFieldGaussian or SampleEnsemble of the aligned model.
    """
    if not isinstance(q, (MeanFieldGaussian, SampleEnsemble)):
      raise ValueError(f"`q` must be a MeanFieldGaussian or a SampleEnsemble, got "
                       f"{type(q).__name__}.")
    self._check(q)
    if isinstance(q, MeanFieldGaussian):
      return MeanFieldGaussian(self._permuted_parts(q.loc, 0), self._permuted_parts(q.scale, 0),
                               name=f"{q.name}_permuted")
    return SampleEnsemble(self._permuted_parts(q.samples, 1), name=f"{q.name}_permuted")

  def apply_to_model(self, model) -> None:
    """Permutes every variable of `model` in place, BatchNormalization statistics included.

    The posterior holds the trainable weights only; the moving mean and variance of
    BatchNormalization layers live in the model. Call this on the model whose statistics belong
    to the permuted posterior (the run that produced `q_b`).

    Raises:
      ValueError: `model` does not have the aligned model's variables.
    """
    weights = model.weights
    if len(weights) != self._num_weights or any(
        tuple(weights[s.slot].shape.as_list()) != s.shape for s in self._specs):
      raise ValueError(f"Model {model.name!r} does not have the variables of the model this "
                       "permutation was found for.")
    for spec in self._specs:
      v = weights[spec.slot]
      v.assign(_permute(v.numpy(), spec.moves, self._perms).astype(v.dtype.as_numpy_dtype))

  def __repr__(self):
    sizes = ", ".join(f"{g.name}: {g.size}" for g in self._groups)
    return f"Permutation({sizes}{'; ' + str(self.report) if self.report else ''})"


def align(model, q_a, q_b, cost: str = "wasserstein", max_sweeps: int = 100,
          seed: Optional[int] = None) -> Permutation:
  r"""Permutes the hidden units of `q_b` to bring it closest to `q_a`.

  Minimizes over one permutation P_ℓ per group ℓ of hidden units (a layer's units, or every
  layer feeding one residual stream) the squared 2-Wasserstein distance between the mean-field
  Gaussians (Rossi et al., 2023):

  ```none
  min_P  Σ_w ‖μ_a,w − P(μ_b,w)‖² + ‖σ_a,w − P(σ_b,w)‖²
  ```

  where P(·) permutes each axis of weight w by its group's permutation (a kernel's rows by the
  group feeding the layer, its columns and the bias by the layer's own group). With the other
  groups held fixed, the distance is linear in P_ℓ up to a constant, ‖a − P b‖² = ‖a‖² + ‖b‖²
  − 2⟨a, P b⟩, so each group's best permutation is a linear assignment (solved exactly with
  `scipy.optimize.linear_sum_assignment`). The descent starts from a forward pass that matches
  each group, in the order the layers run, on the weights whose other axes are already settled
  (exact for a permuted copy), kept only if it is closer than the identity. Groups are then
  visited in turn until a full sweep changes
  none (coordinate descent, as weight matching does: Ainsworth et al., 2023, Algorithm 1), at
  most `max_sweeps` sweeps. A permutation is accepted only if it lowers the distance, so the
  distance never increases (this matters where one weight has both axes in one group, e.g. a
  Dense layer inside a residual stream, where the assignment is only a linearization).

  `cost="means"` matches the means alone (Git Re-Basin's weight matching of two point
  estimates). A `SampleEnsemble` takes part through its per-weight mean and standard deviation.

  Args:
    model: the tf_keras model (Sequential or functional) whose `trainable_variables` the
      posteriors are aligned with; only its architecture is used.
    q_a: the reference posterior (MeanFieldGaussian or SampleEnsemble).
    q_b: the posterior to permute.
    cost: "wasserstein" (means and standard deviations) or "means".
    max_sweeps: cap on the sweeps over all groups.
    seed: None visits the groups in the model's order; an int shuffles the order of every sweep
      from that seed.

  Returns:
    A `Permutation`; `perm.apply(q_b)` is the aligned posterior and `perm.report` says whether
    the descent converged.

  Raises:
    ValueError: an unsupported layer (named), posteriors that do not match the model or each
      other, a bad `cost` or `max_sweeps`.

  #### Examples

  ```python
  perm = tfp_ext.posterior.align(model, q_a, q_b)
  print(perm.report)  # alignment (wasserstein): converged after 3 sweep(s); distance 127 -> 32.7
  q_b_aligned = perm.apply(q_b)
  perm.apply_to_model(model_b)          # BatchNormalization statistics of run b, if any
  ```

  #### References

  [1]: Simone Rossi, Ankit Singh, Thomas Hannagan. On permutation symmetries in Bayesian neural
       network posteriors: a variational perspective. NeurIPS 2023.
       https://arxiv.org/abs/2310.10171
  [2]: Samuel K. Ainsworth, Jonathan Hayase, Siddhartha Srinivasa. Git Re-Basin: Merging Models
       modulo Permutation Symmetries. ICLR 2023. https://arxiv.org/abs/2209.04836
  """
  if cost not in ("wasserstein", "means"):
    raise ValueError(f"`cost` must be 'wasserstein' or 'means', got {cost!r}.")
  max_sweeps = check_int("max_sweeps", max_sweeps)
  if seed is not None:
    seed = check_int("seed", seed, minimum=0)
  variables = model.trainable_variables
  for label, q in (("q_a", q_a), ("q_b", q_b)):
    if not isinstance(q, (MeanFieldGaussian, SampleEnsemble)):
      raise ValueError(f"`{label}` must be a MeanFieldGaussian or a SampleEnsemble, got "
                       f"{type(q).__name__}.")
    try:
      q.check_compatible(variables)
    except ValueError as e:
      raise ValueError(f"`{label}` does not match model {model.name!r}: {e}") from None
  groups, specs = _parse(model)
  (ma, sa), (mb, sb) = _summary(q_a, "q_a"), _summary(q_b, "q_b")
  parts = [(ma, mb)] if cost == "means" else [(ma, mb), (sa, sb)]
  specs_of = {}
  for spec in specs:
    if spec.trainable_index is not None:
      for m in spec.moves:
        specs_of.setdefault(m.group, []).append((spec, m))

  def distance(perms):
    total = 0.
    for a_parts, b_parts in parts:
      b_parts = list(b_parts)
      for spec in specs:
        if spec.trainable_index is not None:
          i = spec.trainable_index
          b_parts[i] = _permute(b_parts[i], spec.moves, perms)
      total += sum(float(np.sum((a - b) ** 2)) for a, b in zip(a_parts, b_parts))
    return total

  def best_assignment(g, perms, usable=lambda spec, move: True):
    score = np.zeros((groups[g].size, groups[g].size))
    for spec, move in specs_of.get(g, []):
      if usable(spec, move):
        for a_parts, b_parts in parts:
          b = _permute(b_parts[spec.trainable_index], spec.moves, perms, skip=move)
          score += _unit_rows(a_parts[spec.trainable_index], move) @ _unit_rows(b, move).T
    return linear_sum_assignment(score, maximize=True)[1]

  perms = [np.arange(g.size) for g in groups]
  current = distance(perms)
  distances = [current]
  # Start from a forward pass: groups in the order their layers run, each matched on the
  # weights whose other axes are already settled (the inputs, or groups matched before it).
  # For a permuted copy this finds the exact answer; from the identity, coordinate descent can
  # stop at a coordinate-wise minimum instead.
  start = list(perms)
  for g in range(len(groups)):
    settled = lambda spec, move, g=g: all(m is move or m.group < g for m in spec.moves)
    start[g] = best_assignment(g, start, settled)
  if distance(start) < current:
    perms, current = start, distance(start)
  distances.append(current)
  rng = np.random.default_rng(seed) if seed is not None else None
  converged, sweeps = not groups, 0
  while not converged and sweeps < max_sweeps:
    sweeps += 1
    changed = False
    order = list(range(len(groups))) if rng is None else list(rng.permutation(len(groups)))
    for g in order:
      candidate = best_assignment(g, perms)
      if np.array_equal(candidate, perms[g]):
        continue
      trial = list(perms)
      trial[g] = candidate
      d = distance(trial)
      if d < current:
        perms, current, changed = trial, d, True
    distances.append(current)
    converged = not changed
  report = AlignmentReport(converged=converged, num_sweeps=sweeps,
                           distances=tuple(distances), cost=cost)
  return Permutation(groups, specs, perms, report,
                     [tuple(v.shape.as_list()) for v in variables], len(model.weights))
