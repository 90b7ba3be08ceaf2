"""Sensors and schedules."""

from notify_sensors.landing import landing_sensor

__all__ = ["landing_sensor"]
