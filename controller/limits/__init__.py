"""Limits on users and API keys: rpm, tpm, parallel requests and token budgets.

* ``periods``    a budget's UTC day or month (``period_bounds``)
* ``_limitset``  ``LimitSet``, the limits of one user or key as a row holds them
* ``_limiter``   ``Limiter``: admission and release on the gateway's path
* ``_headers``   OpenAI's ``x-ratelimit-*`` and ``Retry-After`` headers
* ``_seed``      ``UsageTable``: a budget's used tokens, from the usage table
"""

from controller.limits._limiter import WINDOW, Admission, Caller, Limiter
from controller.limits._limitset import LimitSet
from controller.limits._seed import UsageTable

__all__ = ["WINDOW", "Admission", "Caller", "LimitSet", "Limiter", "UsageTable"]
