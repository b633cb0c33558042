"""The progress bar: counts the steps that will run, and says when the first step compiles."""

from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm

# Seconds of steady stepping before a time budget's step count is estimated (the first step,
# which may compile, is never part of the estimate).
ESTIMATE_AFTER_S = 1.0


def planned_steps(step_limit: float, step: int, elapsed: float, budget: float, seconds_per_step: float) -> int:
    """The step a run will stop at: its step limit, or where the time budget runs out at this speed."""
    left = max(budget - elapsed, 0.0)
    return int(min(step_limit, step + math.ceil(left / max(seconds_per_step, 1e-9))))


class Progress:
    """tqdm over training steps. Under a time budget the total is re-estimated from the measured
    speed (unknown until then), so the bar and its ETA describe what will run, not the epoch limit."""

    def __init__(self, step_limit: float, initial: int, budget: float | None, disable: bool, desc: str) -> None:
        self.step_limit, self.budget, self.started = step_limit, budget, time.monotonic()
        self.steady: tuple[float, int] | None = None  # (time, step) after this invocation's first step
        self.totals: list[int | None] = []  # every total the bar showed, for tests and the log
        total = None if budget else step_limit
        self.bar = tqdm(
            total=None if total == math.inf else total,
            initial=initial,
            disable=disable,
            unit="step",
            dynamic_ncols=True,
            desc=desc,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,  # logs get a line every 10 s, not a flood
        )
        self.totals.append(self.bar.total)

    def notice(self, text: str) -> None:
        """One line above the bar."""
        if not self.bar.disable:
            self.bar.write(text, file=sys.stderr)

    def update(self, step: int) -> None:
        now = time.monotonic()
        self.bar.update(1)
        if self.steady is None:
            # The first step may have compiled for seconds: restart the bar's clock and speed after it,
            # so the rate and ETA describe the steps that follow (tqdm's n/initial are public).
            self.steady = (now, step)
            self.bar.reset(total=self.bar.total)
            self.bar.initial = self.bar.n = self.bar.last_print_n = step
            return
        if self.budget and now - self.steady[0] >= ESTIMATE_AFTER_S and step > self.steady[1]:
            per_step = (now - self.steady[0]) / (step - self.steady[1])
            total = planned_steps(self.step_limit, step, now - self.started, self.budget, per_step)
            if total != self.bar.total:
                self.bar.total = total
                self.totals.append(total)

    def set_postfix(self, values: dict[str, str]) -> None:
        self.bar.set_postfix(values)

    def close(self, step: int) -> None:
        """Close at 100%: a run that stopped where it was told to has done all it would run."""
        if self.bar.total != step and (self.budget or self.bar.total is None):
            self.bar.total = step
            self.totals.append(step)
            self.bar.refresh()
        self.bar.close()
