from tests.plan.conftest import prod, prod_values  # noqa: F401  (shared fixtures: the prod stack config)
