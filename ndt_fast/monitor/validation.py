"""Do the alert rules find what they are for, and stay quiet otherwise? The harness and its table.

Each rule runs online (``AlertMonitor``, the code the tracker runs) over every fixture of
``ndt_fast.monitor.fixtures``. For a rule R:

- an alert of R *finds* a planted alert of R when it is for the planted layer and comes at a
  sample in [onset, deadline]; each planted alert is found at most once;
- every other alert of R on a null fixture, or on a fixture planted for R, is a *false alarm*;
  alerts of R on fixtures planted for another rule are counted apart (``other``: a layer that
  never expands is both an information-flow problem and a stalled layer) and judge nothing.

**Verdict**: R is VALID iff its recall over its planted fixtures is ≥ :data:`MIN_RECALL` and,
on every null kind and every kind planted for R, its false alarms per 1000 samples (pooled over
that kind's fixtures) are ≤ :data:`MAX_FALSE_ALARMS_PER_1000`. The bounds are the jump rule's
(``ndt_fast.validity``) tightened for alerts, which a person reads: one false alarm per
5000 samples is one per three runs of the article's length (1600 samples).

Regenerate the README table: ``python -m ndt_fast.monitor.validation --seeds 50``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ndt_fast.monitor.alert import Alert
from ndt_fast.monitor.engine import AlertMonitor
from ndt_fast.monitor.fixtures import NULL_KINDS, MonitorFixture, standard_fixtures
from ndt_fast.monitor.history import LayerInfo
from ndt_fast.monitor.rules import AlertRule, default_rules

__all__ = ["MAX_FALSE_ALARMS_PER_1000", "MIN_RECALL", "RuleReport", "run_fixture", "validate_rules",
           "validation_table"]

MIN_RECALL = 0.9
MAX_FALSE_ALARMS_PER_1000 = 0.2


def run_fixture(rules: Sequence[AlertRule], fixture: MonitorFixture) -> list[Alert]:
    """Every alert ``rules`` raise over ``fixture``, fed one sample at a time as a tracker would."""
    layers = [LayerInfo(name, i, width) for i, (name, width) in enumerate(zip(fixture.layer_names, fixture.widths))]
    monitor = AlertMonitor(rules, layers)
    rows = fixture.rows.astype(float)
    for t in range(len(fixture)):
        column = fixture.metric[:, t]
        monitor.add(int(fixture.steps[t]), float(fixture.loss[t]), {m: column for m in monitor.metrics}, rows)
    return monitor.alerts


@dataclass(frozen=True)
class KindCount:
    """One rule on one fixture kind: ``samples`` over ``fixtures``, ``planted`` alerts of this
    rule, ``found`` of them, ``false_alarms``, ``other`` (alerts on another rule's planted kind),
    ``delays`` (samples from onset to the finding alert)."""

    kind: str
    fixtures: int
    samples: int
    planted: int
    found: int
    false_alarms: int
    other: int
    delays: tuple[int, ...]

    @property
    def judged(self) -> bool:
        return self.other == 0 and (self.planted > 0 or self.kind in NULL_KINDS) or self.false_alarms > 0

    @property
    def false_alarms_per_1000(self) -> float:
        return 1000.0 * self.false_alarms / self.samples


@dataclass(frozen=True)
class RuleReport:
    """A rule's counts per fixture kind, and its verdict."""

    rule: str
    description: str
    kinds: tuple[KindCount, ...]
    min_recall: float = MIN_RECALL
    max_false_alarms_per_1000: float = MAX_FALSE_ALARMS_PER_1000

    @property
    def planted(self) -> int:
        return sum(k.planted for k in self.kinds)

    @property
    def recall(self) -> float:
        return sum(k.found for k in self.kinds) / self.planted if self.planted else float("nan")

    @property
    def median_delay(self) -> float:
        delays = [d for k in self.kinds for d in k.delays]
        return float(np.median(delays)) if delays else float("nan")

    @property
    def false_alarms_per_1000(self) -> dict[str, float]:
        """Per kind that judges the rule (null kinds and kinds planted for it)."""
        return {k.kind: k.false_alarms_per_1000 for k in self.kinds if k.kind in NULL_KINDS or k.planted}

    @property
    def reasons(self) -> list[str]:
        out = []
        if not self.recall >= self.min_recall:
            out.append(f"recall {self.recall:.2f} < {self.min_recall:g}")
        for kind, rate in self.false_alarms_per_1000.items():
            if rate > self.max_false_alarms_per_1000:
                out.append(f"{rate:.2f} false alarms / 1000 samples on {kind} > {self.max_false_alarms_per_1000:g}")
        return out

    @property
    def valid(self) -> bool:
        return not self.reasons


def _count(rule: str, fixtures: list[MonitorFixture], alerts: list[list[Alert]]) -> KindCount:
    planted = found = false_alarms = other = samples = 0
    delays: list[int] = []
    for fixture, raised in zip(fixtures, alerts):
        samples += len(fixture)
        mine = [p for p in fixture.planted if p.rule == rule]
        planted += len(mine)
        free = list(mine)
        for alert in raised:
            if alert.rule != rule:
                continue
            sample = int(np.searchsorted(fixture.steps, alert.step))
            hit = next((p for p in free if p.layer == alert.layer and p.onset <= sample <= p.deadline), None)
            if hit is not None:
                free.remove(hit)
                found += 1
                delays.append(sample - hit.onset)
            elif fixture.planted and not mine:
                other += 1
            else:
                false_alarms += 1
    return KindCount(fixtures[0].kind, len(fixtures), samples, planted, found, false_alarms, other, tuple(delays))


def validate_rules(rules: Sequence[AlertRule] | None = None, seeds: Sequence[int] = range(20)) -> list[RuleReport]:
    """One :class:`RuleReport` per rule of ``rules`` (default: ``default_rules()``) over
    ``standard_fixtures(seeds)``. Each fixture is run once with all rules together, as the tracker does."""
    rules = list(default_rules() if rules is None else rules)
    fixtures = standard_fixtures(seeds)
    by_kind: dict[str, list[tuple[MonitorFixture, list[Alert]]]] = {}
    for fixture in fixtures:
        by_kind.setdefault(fixture.kind, []).append((fixture, run_fixture(rules, fixture)))
    reports = []
    for rule in rules:
        counts = tuple(_count(rule.name, [f for f, _ in runs], [a for _, a in runs]) for runs in by_kind.values())
        reports.append(RuleReport(rule.name, repr(rule), counts))
    return reports


def validation_table(reports: Sequence[RuleReport], seeds: int) -> str:
    """Markdown: per rule, recall on its planted kinds, median delay, false alarms / 1000 on
    every null kind, the verdict."""
    nulls = [k for k in NULL_KINDS if any(c.kind == k for r in reports for c in r.kinds)]
    lines = [f"Fixtures: {seeds} seeds × each kind (1600 samples each); bounds: recall ≥ {MIN_RECALL:g}, "
             f"≤ {MAX_FALSE_ALARMS_PER_1000:g} false alarms / 1000 samples on every null kind and planted kind "
             "of the rule.", "",
             "| rule | recall on planted (found / planted) | median delay (samples) | "
             + " | ".join(f"FA / 1000: {k}" for k in nulls) + " | FA / 1000 on its planted | verdict |",
             "|---|---:|---:|" + "---:|" * len(nulls) + "---:|---|"]
    for r in reports:
        counts = {c.kind: c for c in r.kinds}
        planted_fa = [c.false_alarms_per_1000 for c in r.kinds if c.planted]
        found = sum(c.found for c in r.kinds)
        lines.append(f"| {r.rule} | {r.recall:.2f} ({found} / {r.planted}) | {r.median_delay:.0f} | "
                     + " | ".join(f"{counts[k].false_alarms_per_1000:.2f}" for k in nulls)
                     + f" | {max(planted_fa) if planted_fa else float('nan'):.2f} | "
                     + ("**VALID**" if r.valid else "**INVALID**: " + "; ".join(r.reasons)) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ndt_fast.monitor.validation",
                                     description="Validate the default alert rules on the standard fixtures.")
    parser.add_argument("--seeds", type=int, default=50, help="seeds per fixture kind (default 50)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    start = time.perf_counter()
    reports = validate_rules(seeds=range(args.seeds))
    print(validation_table(reports, args.seeds))
    print(f"\n({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0 if all(r.valid for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
