"""Sensors: the landing folder (starts ingestion), the index publisher, the erasure queue (starts the
sweep), the old runs' retention (deletes them) and the runs whose process is gone (marks them failed). The
rest of the chain, up to the plan, runs on automation conditions (``notify_assets.automation``)."""

from notify_sensors.dead_runs import dead_run_sensor
from notify_sensors.erasure import erasure_sweep_sensor
from notify_sensors.landing import landing_sensor
from notify_sensors.recommendation import campaign_index_publisher
from notify_sensors.run_retention import run_retention_sensor

__all__ = ["campaign_index_publisher", "dead_run_sensor", "erasure_sweep_sensor", "landing_sensor",
           "run_retention_sensor"]
