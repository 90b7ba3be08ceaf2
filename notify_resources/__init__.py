"""Dagster resources wrapping the core ports, and the one mapping from environment to resources."""

from notify_resources.resources import NotifyResource, resources_for

__all__ = ["NotifyResource", "resources_for"]
