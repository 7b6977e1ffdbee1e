"""Runs the shared optimizer suite (`suite.py`) on every registered variational optimizer."""

import pytest

from tests.optimizers import suite


@pytest.fixture(scope="module", params=suite.REGISTRY, ids=str)
def case_and_reference(request):
  """Each optimizer's reference run, trained once per module and shared by its checks."""
  return request.param, suite.reference_run(request.param)


@pytest.mark.parametrize("check", suite.CHECKS, ids=lambda c: c.__name__[len("check_"):])
def test_optimizer_contract(case_and_reference, check, tmp_path):
  case, reference = case_and_reference
  if check is suite.check_checkpoint_resume:
    check(case, reference, tmp_path)
  else:
    check(case, reference)
