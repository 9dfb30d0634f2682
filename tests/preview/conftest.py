"""Shared by the preview CLI tests: the shipped prod stack file as a document to edit."""

import pytest
import yaml

from .prs import PROD


@pytest.fixture(scope="module")
def prod_doc():
    return yaml.safe_load(PROD.read_text())
