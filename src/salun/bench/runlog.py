"""What ``salun bench`` prints while it runs: one line per finished run, readable in a log.

A redirected log (``scripts/main.sh > log``) gets plain lines only: progress bars, which
are carriage-return animations, are drawn only when stderr is a terminal (then the lines
are written above the bar). Each line names the run, its status and duration, the overall
count and the stage's ETA.

The ETA is per stage (original, retrain, tune, final), from the mean time per finished run
of that stage in this session: stages differ by orders of magnitude (training an original
model vs a few unlearning epochs), so a rate over the whole grid is meaningless. The time
per run is the interval between completions, which is a run's duration when runs execute
one after another and the throughput when Ray runs them in parallel. Runs answered from a
cache (a reused model, a reused search run) take no time and are left out of the mean.
Until one run of the stage has finished, the ETA is "unknown".

The whole job's ETA follows each line once every stage still to come has a time per run:
its own, or that of the stage whose runs are alike (Retrain trains like the original
models; the final runs unlearn like the search's runs). Until then the line says nothing
about the whole job rather than guess. A failed run's line carries its reason.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from salun.utils import progress

STAGE_NAMES = {"original": "original models", "retrain": "Retrain", "tune": "lr search",
               "final": "final runs", "audit": "audit shadows"}  # fmt: skip
# a stage with no finished run yet borrows the time per run of a stage whose runs are alike
ALIKE = {"retrain": ("original",), "original": ("retrain",), "tune": ("final",),
         "final": ("tune",)}  # fmt: skip


def _kind(stage: str) -> str:
    return stage.split()[0]  # "final paper" -> "final"


def stage_plan(cfg: Any) -> dict[str, int]:
    """Runs per stage of a whole benchmark ``cfg`` (the stages :class:`RunLog` is told
    about, in order), for the job's ETA; their sum is ``count_runs`` plus the audit's."""
    from salun.bench.audit_stage import audit_task_count
    from salun.bench.plan import search_grid

    n_s = len(cfg.scenarios)
    plan = {"original": len(cfg.all_seeds), "retrain": len(cfg.all_seeds) * n_s}
    if cfg.tune_lr:
        plan["tune"] = len(cfg.search_seeds) * n_s * sum(len(search_grid(m)) for m in cfg.methods)
    for protocol in cfg.protocols:
        plan[f"final {protocol}"] = len(cfg.seeds) * n_s * len(cfg.methods)
    if audit_task_count(cfg):
        plan["audit"] = audit_task_count(cfg)
    return {k: v for k, v in plan.items() if v}


def format_eta(seconds_left: float, now: dt.datetime) -> str:
    """``ETA 10:44:12 (in 3 min)``; a date is added when it is not today."""
    at = now + dt.timedelta(seconds=seconds_left)
    clock = at.strftime("%H:%M:%S") if at.date() == now.date() else at.strftime("%Y-%m-%d %H:%M")
    return f"ETA {clock} (in {format_duration(seconds_left)})"


def format_duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s // 3600:.0f} h {s % 3600 / 60:02.0f} min"


class RunLog:
    """The benchmark's progress output.

    Args:
        total: every run of the grid.
        done: runs already recorded (a resumed folder).
        quiet: print nothing (errors and the final line are the caller's).
        stream: where to write (stderr).
        clock: seconds, monotonic (tests pass a fake one).
        wallclock: the local time the ETA is added to.
        plan: runs per stage of the whole job, in order (:func:`stage_plan`); without it
            only the stage's ETA is shown.
    """

    def __init__(
        self,
        total: int,
        done: int = 0,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], dt.datetime] = dt.datetime.now,
        plan: Mapping[str, int] | None = None,
    ) -> None:
        self.total, self.done, self.quiet = total, done, quiet
        self.plan = dict(plan or {})
        self.per_run: dict[str, float] = {}  # stage -> mean seconds per run, once measured
        self.started: set[str] = set()
        self.stream = stream or sys.stderr
        self.clock, self.wallclock = clock, wallclock
        self.stage: str | None = None
        self.stage_todo = self.stage_done = 0
        self.intervals: list[float] = []
        self._last = clock()
        self.bar = None
        if not quiet and _isatty(self.stream):
            self.bar = progress(total=total, desc="bench", leave=False)
            self.bar.update(done)

    def say(self, text: str) -> None:
        """One line (above the bar on a terminal)."""
        if self.quiet:
            return
        if self.bar is not None and not self.bar.disable:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def skipped(self) -> None:
        """Say how many finished runs a resumed folder already holds."""
        if self.done:
            self.say(f"resuming: {self.done} finished runs skipped, {self.total - self.done} to do")

    def start_stage(self, stage: str, todo: int) -> None:
        self.stage, self.stage_todo, self.stage_done = stage, todo, 0
        self.started.add(stage)
        self.intervals = []
        self._last = self.clock()
        if todo:
            name = STAGE_NAMES.get(stage, stage)
            self.say(f"stage {name}: {todo} run{'s' * (todo != 1)} to do, ETA unknown")

    def finished(
        self,
        key: str,
        status: str,
        *,
        cached: bool = False,
        run_s: float | None = None,
        error: str | None = None,
    ) -> None:
        """Log one finished run (``cached``: answered from a cache, left out of the ETA).

        ``run_s``: the run's own time, shown; without it the wall time since the previous
        completion is shown, which under a parallel executor is not the run's time. The ETA
        always uses the completion intervals (they account for the parallelism).
        ``error``: why a failed run failed, shown after its status (first line only)."""
        t = self.clock()
        took = t - self._last  # wall time since the previous completion
        if not cached:
            self.intervals.append(took)
            if self.stage is not None:
                self.per_run[self.stage] = sum(self.intervals) / len(self.intervals)
        self._last = t
        self.done += 1
        self.stage_done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(key)
        how = "cached" if cached else f"{took if run_s is None else run_s:.1f} s"
        if error:
            status += f": {_first_line(error)}"
        line = f"[{self.done}/{self.total}] {key} {status} ({how}); {self.eta()}"
        job = self.job_eta()
        self.say(line + (f"; job {job}" if job else ""))

    def derived(self, key: str, status: str) -> None:
        """Log a record made without running anything (a reused identical run)."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        self.say(f"[{self.done}/{self.total}] {key} {status} (no run)")

    def eta(self) -> str:
        """The current stage's progress and ETA."""
        name = STAGE_NAMES.get(self.stage or "", self.stage or "")
        left = self.stage_todo - self.stage_done
        head = f"{name} {self.stage_done}/{self.stage_todo}"
        if left <= 0:
            return f"{head}, stage done"
        if not self.intervals:
            return f"{head}, ETA unknown"
        mean = sum(self.intervals) / len(self.intervals)
        return f"{head}, stage {format_eta(mean * left, self.wallclock())}"

    def job_eta(self) -> str | None:
        """The whole job's ETA, or None while a stage still to run has no time per run
        (its own or an alike stage's) or no plan was given."""
        if not self.plan or self.stage is None:
            return None
        left_now = max(0, self.stage_todo - self.stage_done)
        per_now = self._per_run(self.stage)
        if per_now is None or self.done >= self.total:
            return None
        seconds = left_now * per_now
        # The runs the job has left after this stage belong to the stages not started in
        # this session. A resumed folder holds the early stages' runs already, so they are
        # handed out from the last stage backwards (whatever order the runner uses for the
        # unlearning stages, those borrow each other's time per run).
        budget = max(0, self.total - self.done - left_now)
        later = [s for s in self.plan if s != self.stage and s not in self.started]
        for stage in reversed(later):
            n = min(self.plan[stage], budget)
            budget -= n
            if n:
                per = self._per_run(stage)
                if per is None:
                    return None
                seconds += n * per
        return format_eta(seconds, self.wallclock())

    def _per_run(self, stage: str) -> float | None:
        if stage in self.per_run:
            return self.per_run[stage]
        kind = _kind(stage)
        for other, per in self.per_run.items():  # another protocol's final runs, say
            if _kind(other) == kind:
                return per
        for alike in ALIKE.get(kind, ()):
            for other, per in self.per_run.items():
                if _kind(other) == alike:
                    return per
        return None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "(no reason recorded)"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
