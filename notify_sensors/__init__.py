"""Sensors: the landing folder (starts ingestion), the index publisher and the erasure queue (starts the
sweep). The rest of the chain, up to the plan, runs on automation conditions (``notify_assets.automation``)."""

from notify_sensors.erasure import erasure_sweep_sensor
from notify_sensors.landing import landing_sensor
from notify_sensors.recommendation import campaign_index_publisher

__all__ = ["campaign_index_publisher", "erasure_sweep_sensor", "landing_sensor"]
