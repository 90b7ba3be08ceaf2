"""Thin AWS Lambda handlers (one module per function) and the local gateway that serves them over HTTP.

Handlers parse the event, call notify_core, and shape the reply. They never import Dagster.
"""
