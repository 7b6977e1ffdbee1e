"""The model registry: each configured model, its loaded versions and their signatures.

As TF Serving's `ServerCore`: versions are directories `BASE/<version>/` found by polling; new
ones are loaded and swapped in, the newest `num_versions` stay (the `latest` policy). Requests
resolve a model spec (name, optional version or label) to one loaded `Servable` and keep it for
their whole run, so a swap never drops a request in flight.
"""

import logging
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfp_ext.serving.model_config import ModelConfig
from tfp_ext.serving.status import invalid_argument
from tfp_ext.serving.status import not_found

__all__ = ["ModelRegistry", "Servable"]

_log = logging.getLogger("tfp_ext.serving")
_VERSION_DIR = re.compile(r"^[0-9]+$")


class Servable:
  """One loaded version of a model: its signatures, their input specs and the SignatureDefMap."""

  def __init__(self, name: str, version: int, path: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import get_model_metadata_pb2  # pylint: disable=g-import-not-at-top
    self.name, self.version, self.path = name, version, path
    self._tf = tf
    self.loaded = tf.saved_model.load(path, tags=["serve"])
    self.signatures = dict(self.loaded.signatures)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
      proto.ParseFromString(f.read())
    meta = next(m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags)
    # The `signature_def` metadata of GetModelMetadata, for both transports.
    self.signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in meta.signature_def.items():
      self.signature_def_map.signature_def[key].CopyFrom(sig)
    self.inputs = {}  # signature -> {input name: TensorSpec}
    self.outputs = {}  # signature -> sorted output names
    for key, fn in self.signatures.items():
      _, kwargs = fn.structured_input_signature
      self.inputs[key] = dict(kwargs)
      self.outputs[key] = sorted(fn.structured_outputs)

  def __repr__(self) -> str:
    return f"Servable({self.name!r}, version {self.version})"

  def run(self, signature: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Runs `signature` on `feeds` (checked by the predict path); returns numpy outputs."""
    fn = self.signatures[signature]
    out = fn(**{k: self._tf.constant(v) for k, v in feeds.items()})
    return {k: v.numpy() for k, v in out.items()}


class _Model:
  """A model name, its base path and its currently loaded versions (newest `num_versions`)."""

  def __init__(self, config: ModelConfig):
    self.config = config
    self.versions: Dict[int, Servable] = {}
    self.failed: Dict[int, str] = {}

  def poll(self) -> None:
    """Loads new versions found on disk, then drops versions beyond `num_versions`."""
    base = self.config.base_path
    try:
      on_disk = sorted((int(d) for d in os.listdir(base)
                        if _VERSION_DIR.match(d) and os.path.isdir(os.path.join(base, d))),
                       reverse=True)
    except FileNotFoundError:
      on_disk = []
    wanted = on_disk[:self.config.num_versions]
    new = dict(self.versions)
    for v in wanted:
      if v in new or v in self.failed:
        continue
      path = os.path.join(base, str(v))
      try:
        _log.info("Loading %s version %d from %s", self.config.name, v, path)
        new[v] = Servable(self.config.name, v, path)
      except Exception as e:  # pylint: disable=broad-except
        # Keep serving what is loaded; a broken version is reported by the status endpoint.
        _log.error("Failed to load %s version %d: %s", self.config.name, v, e)
        self.failed[v] = f"{type(e).__name__}: {e}"
    # Versions deleted from disk are unloaded (a rollback), unless nothing else could be served.
    keep = [v for v in sorted(new, reverse=True) if v in on_disk][:self.config.num_versions]
    if not keep:
      keep = sorted(new, reverse=True)[:self.config.num_versions]
    # One assignment: a request sees either the old or the new dict, never a partial update.
    self.versions = {v: new[v] for v in keep}


class ModelRegistry:
  """The configured models; resolves model specs to loaded servables."""

  def __init__(self, configs: List[ModelConfig]):
    self._models = {c.name: _Model(c) for c in configs}

  @property
  def names(self) -> List[str]:
    return sorted(self._models)

  def poll(self) -> None:
    """Scans every base path once and loads new versions."""
    for m in self._models.values():
      m.poll()

  def versions(self) -> Dict[str, List[int]]:
    return {name: sorted(m.versions) for name, m in self._models.items()}

  def _model(self, name: str) -> _Model:
    # Only names from the configuration exist; a requested name is never joined into a path.
    model = self._models.get(name)
    if model is None:
      raise not_found(f"Servable not found for request: Latest({name})")
    return model

  def has(self, name: str) -> bool:
    return name in self._models

  def resolve(self, name: str, version: Optional[int] = None,
              label: Optional[str] = None) -> Servable:
    """The servable for a model spec: the latest version, a specific one, or a label's.

    Raises `StatusError` NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for a
    version label (none are configured: TF Serving's answer for an unknown label).
    """
    model = self._model(name)
    if label:
      if version is not None:
        raise invalid_argument("A model spec sets both a version and a version label; give one")
      raise invalid_argument(f"Unrecognized servable version label: {label}")
    versions = model.versions
    if version is None:
      if not versions:
        raise not_found(f"Servable not found for request: Latest({name})")
      return versions[max(versions)]
    if version not in versions:
      raise not_found(f"Servable not found for request: Specific({name}, {version})")
    return versions[version]

  def status(self, name: str, version: Optional[int] = None) -> List[Tuple[int, str, str, str]]:
    """`(version, state, error code, message)` of every version, or of one (GetModelStatus)."""
    model = self._model(name)
    if version is None:
      statuses = [(v, "AVAILABLE", "OK", "") for v in sorted(model.versions, reverse=True)]
      statuses += [(v, "END", "UNKNOWN", msg) for v, msg in sorted(model.failed.items())
                   if v not in model.versions]
      if not statuses:
        raise not_found(f"Could not find any versions of model {name}")
      return statuses
    if version in model.versions:
      return [(version, "AVAILABLE", "OK", "")]
    if version in model.failed:
      return [(version, "END", "UNKNOWN", model.failed[version])]
    raise not_found(f"Could not find version {version} of model {name}")

