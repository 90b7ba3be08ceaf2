"""Operations stage: the daily operations report as an asset, its picture in the asset's metadata.

Thin glue over :mod:`notify_core.reports.operations`: compute the day's report from the Store (and the
embedded log's consumer lag), write ``reports/operations-<day>.html`` under the data directory, and put
the headline numbers and the figure (a PNG as a data URI in Markdown) in the materialization's metadata,
where the Dagster UI shows it.
"""

from datetime import date, timedelta
from typing import Any

import dagster as dg

from notify_core.reports.operations import daily_operations, operations_figure, write_operations_report
from notify_core.reports.plots import data_uri
from notify_resources.resources import NotifyResource

OPERATIONS_GROUP = "operations"


class OperationsConfig(dg.Config):
    day: str | None = None  # YYYY-MM-DD (UTC); default: today
    days_ago: int = 0  # with no day: today minus this many days (1: yesterday's full day)


@dg.asset(group_name=OPERATIONS_GROUP, deps=[dg.AssetKey("delivery_run")],
          description="The day's operations: sends, opens, clicks, CTR, opt-outs, lateness, consumer lag, "
                      "plan sizes; an HTML report under reports/ and the figure in this asset's metadata.")
def operations_report(context: dg.AssetExecutionContext, config: OperationsConfig,
                      notify: NotifyResource) -> dg.MaterializeResult:
    now = notify.now()  # the resource's clock (NOTIFY_CLOCK_START in demos and tests), as every other asset
    day = date.fromisoformat(config.day) if config.day else now.date() - timedelta(days=config.days_ago)
    settings = notify.settings
    stream = None
    if settings.stream != "kafka":  # the embedded log can be read for lag without joining the group
        from notify_core.stream import open_stream

        stream = open_stream(settings)
    try:
        report = daily_operations(notify.store, day=day, now=now, stream=stream)
    finally:
        if stream is not None:
            stream.close()
    figure = operations_figure(report)
    path = write_operations_report(report, settings.data_dir / "reports", figure_uri=data_uri(figure, fmt="svg"))
    context.log.info(f"operations report {report.day}: {report.summary()}")
    metadata: dict[str, Any] = {k: v for k, v in report.summary().items() if v is not None}
    metadata["plot"] = dg.MetadataValue.md(f"![operations {report.day}]({data_uri(figure, fmt='png')})")
    metadata["report"] = dg.MetadataValue.path(str(path))
    metadata["day"] = report.day
    return dg.MaterializeResult(metadata=metadata)


OPERATIONS_ASSETS = [operations_report]
