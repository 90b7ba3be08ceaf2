"""The API key scopes: plain names, in a module of their own so that a route table (and the Lambda
authorizer's IAM role derived from what it imports) can name them without reaching the key store."""

from __future__ import annotations

EVENTS_WRITE = "events:write"
RECOMMENDATIONS_READ = "recommendations:read"
CAMPAIGNS_WRITE = "campaigns:write"
SCHEDULES_WRITE = "schedules:write"
ADMIN = "admin"  # every scope
SCOPES: tuple[str, ...] = (EVENTS_WRITE, RECOMMENDATIONS_READ, CAMPAIGNS_WRITE, SCHEDULES_WRITE, ADMIN)
