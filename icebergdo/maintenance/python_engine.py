"""The python engine: icebergdo's own jobs (pyiceberg + pyarrow), in this process."""

from __future__ import annotations

from icebergdo.maintenance import steps
from icebergdo.maintenance.common import StepReport
from icebergdo.maintenance.steps import TableContext


class PythonEngine:
    name = "python"

    def run(self, step: str, ctx: TableContext) -> StepReport | None:
        return steps.JOBS[step](ctx, dry_run=False)

    def close(self) -> None:
        pass
