"""Read TF Serving's `--model_config_file` (a `ModelServerConfig` text proto).

Supported: `model_config_list { config { name base_path model_platform model_version_policy } }`
with the `latest { num_versions }` policy (TF Serving's default, one version). Anything else is
rejected with an error naming the field, rather than silently ignored.
"""

import dataclasses
import os
import re
from typing import List

from tfp_ext.internal.validation import check_int

__all__ = ["ModelConfig", "parse_model_config", "parse_text_proto", "read_model_config_file"]

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|([A-Za-z_][A-Za-z0-9_]*)'
                    r'|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')'
                    r"|(-?[0-9]+)|([{}:<>;,]))")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """One served model: its name, base path and how many of the latest versions to keep loaded."""
  name: str
  base_path: str
  num_versions: int = 1


def _tokens(text):
  pos, out = 0, []
  text = text.rstrip()
  while pos < len(text):
    m = _TOKEN.match(text, pos)
    if not m or m.end() == pos:
      raise ValueError(f"Cannot parse the model config at character {pos}: {text[pos:pos + 30]!r}")
    pos = m.end()
    if m.group(1):
      continue
    out.append(m.group(0).strip())
  return out


def _parse_message(tokens, i, end):
  """Parses `field: value` / `field { ... }` pairs into a dict of lists, until `end`."""
  fields = {}
  while i < len(tokens) and tokens[i] != end:
    name = tokens[i]
    if not re.match(r"^[A-Za-z_]", name):
      raise ValueError(f"Expected a field name in the model config, got {name!r}.")
    i += 1
    if i < len(tokens) and tokens[i] == ":":
      i += 1
    if i >= len(tokens):
      raise ValueError(f"Field {name!r} has no value in the model config.")
    if tokens[i] in ("{", "<"):
      close = "}" if tokens[i] == "{" else ">"
      value, i = _parse_message(tokens, i + 1, close)
      if i >= len(tokens):
        raise ValueError(f"Unclosed {name!r} block in the model config.")
      i += 1
    else:
      tok = tokens[i]
      value = (bytes(tok[1:-1], "utf-8").decode("unicode_escape") if tok[0] in "\"'"
               else int(tok) if re.match(r"^-?[0-9]+$", tok) else tok)
      i += 1
    fields.setdefault(name, []).append(value)
    if i < len(tokens) and tokens[i] in (";", ","):
      i += 1
  return fields, i


def parse_text_proto(text: str) -> dict:
  """Parses a protobuf text-format message into `{field: [values]}` (nested messages as dicts).

  Also reads TF Serving's other config files (`--batching_parameters_file`,
  `--monitoring_config_file`); the caller checks the fields it knows.
  """
  fields, _ = _parse_message(_tokens(text), 0, None)
  return fields


def _only(fields, allowed, where):
  unknown = sorted(set(fields) - set(allowed))
  if unknown:
    raise ValueError(f"Unsupported field(s) {unknown} in {where} of the model config.")


def parse_model_config(text: str, config_dir: str = ".") -> List[ModelConfig]:
  """Parses a `ModelServerConfig` text proto; relative base paths resolve against `config_dir`."""
  fields = parse_text_proto(text)
  _only(fields, ["model_config_list"], "the top level")
  if len(fields.get("model_config_list", [])) != 1:
    raise ValueError("The model config needs exactly one model_config_list block.")
  lst = fields["model_config_list"][0]
  _only(lst, ["config"], "model_config_list")
  configs = []
  for c in lst.get("config", []):
    _only(c, ["name", "base_path", "model_platform", "model_version_policy"], "config")
    for key in ("name", "base_path"):
      if len(c.get(key, [])) != 1 or not isinstance(c[key][0], str) or not c[key][0]:
        raise ValueError(f"Every config in the model config needs one non-empty {key}.")
    if c.get("model_platform", ["tensorflow"]) != ["tensorflow"]:
      raise ValueError(f"model_platform must be 'tensorflow', got {c['model_platform']}.")
    num_versions = 1
    for policy in c.get("model_version_policy", []):
      _only(policy, ["latest"], "model_version_policy (only `latest` is supported)")
      for latest in policy.get("latest", []):
        _only(latest, ["num_versions"], "latest")
        num_versions = check_int("latest.num_versions", latest.get("num_versions", [1])[0])
    name = c["name"][0]
    if not re.match(r"^[A-Za-z0-9_.-]+$", name):
      raise ValueError(f"Model name {name!r} may only use letters, digits, '_', '.', '-'.")
    configs.append(ModelConfig(name, os.path.abspath(os.path.join(config_dir, c["base_path"][0])),
                               num_versions))
  if not configs:
    raise ValueError("The model config lists no models.")
  names = [c.name for c in configs]
  if len(set(names)) != len(names):
    raise ValueError(f"Duplicate model names in the model config: {names}.")
  return configs


def read_model_config_file(path: str) -> List[ModelConfig]:
  """Reads and parses a `--model_config_file`."""
  with open(path, encoding="utf-8") as f:
    return parse_model_config(f.read(), os.path.dirname(os.path.abspath(path)))
