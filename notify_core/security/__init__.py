"""Security building blocks shared by the domain (issue 14).

* :mod:`~notify_core.security.keys`: API keys with scopes, expiry, rotation and per-key rate limits.
* :mod:`~notify_core.security.audit`: the append-only, hash-chained audit trail.
* :mod:`~notify_core.security.files`: private files and folders (0600 / 0700) and the process umask.
* :mod:`~notify_core.security.keyring`: rotating HMAC keys with key ids in a 0600 secret file
  (tracking tokens, webhook signatures).
* :mod:`~notify_core.security.crypto`: AES-256-GCM envelope encryption of personal fields under data
  keys wrapped by a master key (a local key file, or KMS in aws).
* :mod:`~notify_core.security.tls`: the TLS 1.2+ server context for ``notify serve`` and the Kafka
  TLS/SASL client options.

Nothing here imports Dagster, Lambda code or a backend SDK at import time (the KMS adapter imports
boto3 only when it is built).
"""
