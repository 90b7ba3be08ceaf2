"""Sensors and schedules."""

from notify_sensors.landing import landing_sensor
from notify_sensors.recommendation import campaign_index_publisher
from notify_sensors.replan import REPLAN_SENSORS, replan_on_campaign_embeddings, replan_on_user_embeddings

__all__ = ["REPLAN_SENSORS", "campaign_index_publisher", "landing_sensor", "replan_on_campaign_embeddings",
           "replan_on_user_embeddings"]
