"""The dashboard's tests run over SQLite only: nothing in ``controller.web`` depends
on the database backend, which the controller and store tests cover."""

from __future__ import annotations

import pytest


@pytest.fixture
def database_url() -> str:
    return ""
