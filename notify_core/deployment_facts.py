"""Facts every process of one deployment must agree on, recorded once in the Store.

The first one is the day the plan's Dagster partitions start. It used to be a file in each process's data
directory (``<data_dir>/deployed_on``), which is one place on one machine but not on Kubernetes: the code
server, each run pod and each restarted pod has a data directory of its own, new, so each took the day it
started. A run of today's plan launched at 23:59 whose pod loaded the definitions after midnight had a
partitions definition starting tomorrow, without the day it was asked to plan; a restarted code server lost
every earlier day from the UI. In the Store (DynamoDB there) the first process to ask records the day under
a put-if-absent condition, and every other process, now or later, reads that same day.
"""

from __future__ import annotations

from datetime import date

from notify_core.errors import ConditionFailedError, ConfigurationError
from notify_core.store import tables
from notify_core.store.port import Condition, Store

PLAN_START = "plan_start_date"


def recorded_day(store: Store, fact: str, *, proposed: date) -> date:
    """The day recorded for ``fact``; ``proposed`` is recorded first when none is (the first writer wins).

    Read strongly consistent, so a process that starts right after another recorded the day sees it. When
    two processes propose at once, the loser's conditional put fails and it reads the winner's day."""
    table = store.table(tables.DEPLOYMENT)
    item = table.get(fact, tables.DEPLOYMENT_SK, consistent=True)
    if item is None:
        try:
            table.put({"pk": fact, "sk": tables.DEPLOYMENT_SK, "day": proposed.isoformat()},
                      condition=Condition.absent())
            return proposed
        except ConditionFailedError:
            item = table.get(fact, tables.DEPLOYMENT_SK, consistent=True)
            if item is None:  # recorded and gone again between two reads: nothing sensible to agree on
                raise ConfigurationError(f"the deployment's {fact} vanished from the Store while being recorded") \
                    from None
    try:
        return date.fromisoformat(str(item["day"]))
    except (KeyError, ValueError):
        raise ConfigurationError(f"unreadable {fact} in the Store's {tables.DEPLOYMENT} table: {item!r}") from None
