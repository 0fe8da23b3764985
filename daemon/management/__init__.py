"""The optional Management and Billing API: xAI's own word on keys, limits and the bill.

With a management key (its env var named by ``[management] api_key_env``) the daemon asks
``https://management-api.x.ai`` what no traffic shows: every API key of the team (name, limits,
disabled, expiry), the prepaid balance, the spending limits, the month's invoice preview, and
xAI's per-key, per-day usage to reconcile the ledger against. Without the key nothing here runs.

- `client`: `ManagementClient`, the typed HTTP client (aiohttp + tenacity) and its answers.
- `refresh`: `ManagementRefresher`, the gauges of keys, limits and bill every
  ``management.refresh_interval``, started by `daemon.app` only with a key.

The key is sent only in the ``Authorization`` header: never stored, logged, or put in an error.
Facts from /work/shared/xai-api.md, "The Management API", and docs.x.ai (cited in each docstring
as [doc], [obs] or [guess]).
"""
