"""Sensors: the landing folder (starts ingestion) and the index publisher. The rest of the chain, up to
the plan, runs on automation conditions (``notify_assets.automation``)."""

from notify_sensors.landing import landing_sensor
from notify_sensors.recommendation import campaign_index_publisher

__all__ = ["campaign_index_publisher", "landing_sensor"]
