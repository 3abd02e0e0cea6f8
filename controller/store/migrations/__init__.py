"""Alembic's migration environment for the store (``env.py``, ``versions/``);
run through ``controller.store.migrate``."""
