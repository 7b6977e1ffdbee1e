"""The one error type of the serving core: TF Serving's status code and a message.

The core (model registry, predict path, batcher) raises `StatusError`; each transport maps it to
its own code the way `tensorflow_model_server` does: gRPC uses the code itself, REST the HTTP
status of TF Serving's mapping (`INVALID_ARGUMENT` and `FAILED_PRECONDITION` 400, `NOT_FOUND`
404, `RESOURCE_EXHAUSTED` 429, `UNAVAILABLE` 503, ...). A REST-only condition (a body over the
size limit: 413, a method not allowed: 405) carries its own HTTP status next to the code.
"""

import enum
from typing import Optional

__all__ = ["Code", "StatusError"]


class Code(enum.Enum):
  """Canonical status codes (`google.rpc.Code`, as `grpc.StatusCode` names them) and the HTTP
  status TF Serving's REST API answers with."""
  CANCELLED = (1, 499)
  UNKNOWN = (2, 500)
  INVALID_ARGUMENT = (3, 400)
  DEADLINE_EXCEEDED = (4, 504)
  NOT_FOUND = (5, 404)
  RESOURCE_EXHAUSTED = (8, 429)
  FAILED_PRECONDITION = (9, 400)
  OUT_OF_RANGE = (11, 400)
  UNIMPLEMENTED = (12, 501)
  INTERNAL = (13, 500)
  UNAVAILABLE = (14, 503)

  @property
  def number(self) -> int:
    return self.value[0]

  @property
  def http_status(self) -> int:
    return self.value[1]


class StatusError(Exception):
  """A request failed with `code` and a `message` that names the problem."""

  def __init__(self, code: Code, message: str, http_status: Optional[int] = None):
    super().__init__(message)
    self.code = code
    self.message = message
    self._http_status = http_status

  @property
  def http_status(self) -> int:
    """The REST answer's status: the code's, unless this error set its own (413, 405)."""
    return self._http_status or self.code.http_status

  def __repr__(self) -> str:
    return f"StatusError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> StatusError:
  return StatusError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> StatusError:
  return StatusError(Code.NOT_FOUND, message)
