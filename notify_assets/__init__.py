"""Dagster assets, checks and the Definitions object (workspace.yaml points at ``notify_assets.definitions``)."""
