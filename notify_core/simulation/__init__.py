"""Closed-loop simulation of notification policies (issue 19): see :mod:`.closed_loop`."""

from notify_core.simulation.closed_loop import POLICIES, SimOptions, SimResult, run_policy, simulate

__all__ = ["POLICIES", "SimOptions", "SimResult", "run_policy", "simulate"]
