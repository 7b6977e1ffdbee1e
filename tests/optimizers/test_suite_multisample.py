"""Runs the shared optimizer suite (`suite.py`) on the several-samples-per-step configurations.

A module of its own so the test runner can place it beside `test_suite.py` on another worker.
"""

from tests.optimizers import suite

case_and_reference, test_optimizer_contract = suite.contract_tests(suite.MULTI_SAMPLE)
