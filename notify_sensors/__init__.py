"""Sensors and schedules."""

from notify_sensors.landing import landing_sensor
from notify_sensors.recommendation import campaign_index_publisher

__all__ = ["campaign_index_publisher", "landing_sensor"]
