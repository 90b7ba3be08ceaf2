"""Scheduling: a 24-hour plan per user, not a filter (issue 6).

``planner.plan_users`` turns candidate campaigns into each user's day of notifications under caps,
quiet hours, gaps, cooldowns, budgets and per-minute capacity; ``store`` persists plans so "what is
due in minute M" is one query per shard and re-planning is idempotent. No Dagster, no AWS here.
"""

from notify_core.scheduling.models import FatigueOptions, PlanOptions
from notify_core.scheduling.planner import ChunkInput, Ledger, Plan, PlanStats, plan_chunks, plan_users

__all__ = ["ChunkInput", "FatigueOptions", "Ledger", "Plan", "PlanOptions", "PlanStats", "plan_chunks", "plan_users"]
