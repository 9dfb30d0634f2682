import copy

import pytest

from bazbii_plan.stackconfig import SECRET_KEYS, load_stack_config
from bazbii_plan.stackfile import read_stack_file
from offline_preview.harness import REPO_ROOT


@pytest.fixture(scope="module")
def prod_values():
    """The prod stack file's values with placeholder secrets, as the CLI would hand them over."""
    values, secret_keys, _ = read_stack_file(REPO_ROOT / "Pulumi.prod.yaml")
    for key in SECRET_KEYS:
        values[key] = "placeholder"
        secret_keys.add(key)
    return values, secret_keys


@pytest.fixture(scope="module")
def prod(prod_values):
    values, secret_keys = prod_values
    return load_stack_config(copy.deepcopy(values), set(secret_keys))
