"""Limits on users and API keys: rpm, tpm, parallel requests and token budgets."""
