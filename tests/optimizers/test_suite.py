"""Runs the shared optimizer suite (`suite.py`) on every registered one-sample optimizer."""

from tests.optimizers import suite

case_and_reference, test_optimizer_contract = suite.contract_tests(suite.ONE_SAMPLE)
