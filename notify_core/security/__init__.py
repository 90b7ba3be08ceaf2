"""Security: API keys with scopes, the audit trail, and checks on what outsiders send (URLs)."""
