"""Does a jump detector find jumps, or noise? A validity harness and a default rule that passes it.

ndtracker's jump rule (``JumpDetector``: |z| > 3 of each sample against the mean and standard
deviation of the 50 samples before it) fires 3-5 times per 1000 samples of pure Gaussian noise
(P(|Z| > 3) = 0.0027, more with σ estimated from 50 samples), and on a slow drift every sample
sits ~window/2 slopes above the window mean. Its detections on real curves therefore say little.
This module measures that, and supplies a default rule that does not have the problem.

**The harness.** A *fixture* is a series with known planted steps (none for a null fixture).
The standard battery (:func:`standard_fixtures`), with every noise of unit standard deviation σ:

==================  =====================================================================
kind                series
==================  =====================================================================
single_step         Gaussian noise + one step of ±5σ at a random index in the middle half
multi_step          Gaussian noise + five steps of ±5σ (random signs), at least 50 apart
gaussian_noise      null: white Gaussian noise
slow_drift          null: linear ramp rising 0.05σ per sample (100σ over 2000) + noise
ar1_noise           null: AR(1) noise, φ = 0.9 (correlated over ~10 samples)
student_t_noise     null: Student-t noise, 3 degrees of freedom (heavy tails, outliers)
==================  =====================================================================

5σ is a step anyone sees in a plot, yet small enough to test the rule: at 3σ no rule built from
a few samples either side can separate steps from noise. :func:`validate_detector` matches each
detection to at most one planted step within ``tolerance`` (5) samples, nearest first; every
other detection — on a null fixture or a planted one — is a false positive (FP). **Verdict
rule**: VALID iff the recall over all planted steps of the battery is ≥ 0.9 *and*, for every
fixture kind (null and planted alike), FPs per 1000 samples over that kind's fixtures are ≤ 1.

**The default rule** (:func:`default_rule_indices`, documented step by step there) tests, at
every index t, the *level change* D_t = (trimmed mean of the 7 samples from t) − (trimmed mean
of the 7 samples before t) against the mean and spread of the earlier D values of the last
200 indices, and reports a local maximum of that z-score above 5. Why each element is there:

- *Differencing adjacent blocks*, instead of comparing a sample with a long window mean: the
  long mean lags by window/2 samples, so any drift looks like a jump (ndt's failure on drift).
  D_t subtracts two neighbouring levels: a linear drift only adds the constant k·slope, which
  the reference mean removes, and the level of the series cancels, so the running sums an
  online port keeps stay small and stable over millions of samples.
- *Blocks of 7* (persistence): a change must hold for most of a block to move its level, so a
  single spike is not a step; averaging 5 samples divides the noise of each level by √5.
- *Trimmed means* (drop the smallest and largest of the 7): one outlier per block is ignored,
  which is what heavy-tailed noise needs; compared with a median the trimmed mean keeps ~92% of
  the mean's Gaussian efficiency and its response to a step has a 3-sample, not 7-sample, top.
- *Self-normalised scale*: z_t divides by the standard deviation of D itself over the recent
  past, not of the raw samples. Correlated noise (AR(1)) wanders, so its D values are wider
  than white noise of the same σ suggests; measuring D's own spread adapts to any noise
  correlation without a noise model. Its mean subtracts the drift term.
- *Reference of 200 D values*: neighbouring D values share samples, so 200 of them carry only
  ~30 independent ones; with 50 (≈ 7 independent) the scale estimate was noisy enough to give
  false positives on AR(1) and t(3) noise during tuning. Testing starts once 100 are there:
  with 50, the first 50 testable samples of 400-sample Gaussian and t(3) series held a third
  of all their false positives.
- *Reference excludes the last 2·7 indices*: D_t and its reference share no sample, so the
  step being tested never inflates its own yardstick.
- *Excluding a detected step's own D values* from later references: left in, a 5σ step
  inflates the scale for the next 200 samples and hides a second step (in tuning, recall of
  5σ steps 100 samples apart fell from 1.0 to 0.16 without the exclusion).
- *Local maximum over ±6 samples*: D rises for 6 samples before a step and falls for 6 after;
  one detection per step, at the peak. Two candidates are ≥ 7 samples apart.
- *Threshold 5*: on the battery with 100 seeds (200 000 samples per kind) it leaves ≤ 0.08 FP /
  1000 on every kind (t(3) the worst) and finds all 600 planted 5σ steps; ~98% of 4σ steps.
- *Location*: the top of D at a clean step is 3 samples wide; of t−1, t, t+1 the rule reports
  the sample with the largest jump from its predecessor (in the step's direction).

Known limits: no detection in the first 120 samples (the reference fills), a detection is final
12 samples after its index, steps < 7 samples apart are one detection, and a sudden rise in the
noise level gives a burst of detections until the reference (200 samples) has adapted.
"""

from __future__ import annotations

from ndt_fast.validity.fixtures import (
    DEFAULT_STEP_SIZE,
    NULL_KINDS,
    PLANTED_KINDS,
    Fixture,
    ar1_noise,
    gaussian_noise,
    multi_step,
    single_step,
    slow_drift,
    standard_fixtures,
    student_t_noise,
)
from ndt_fast.validity.harness import (
    DEFAULT_TOLERANCE,
    MAX_FP_PER_1000,
    MIN_RECALL,
    FixtureResult,
    ValidityReport,
    comparison_table,
    match_detections,
    validate_detector,
)
from ndt_fast.validity.rules import (
    Detector,
    default_detector,
    default_rule_detections,
    default_rule_indices,
    ndt_detector,
    ndt_rule_indices,
)

__all__ = [
    "DEFAULT_STEP_SIZE",
    "DEFAULT_TOLERANCE",
    "Detector",
    "Fixture",
    "FixtureResult",
    "MAX_FP_PER_1000",
    "MIN_RECALL",
    "NULL_KINDS",
    "PLANTED_KINDS",
    "ValidityReport",
    "ar1_noise",
    "comparison_table",
    "match_detections",
    "default_detector",
    "default_rule_indices",
    "gaussian_noise",
    "multi_step",
    "ndt_detector",
    "ndt_rule_indices",
    "single_step",
    "slow_drift",
    "standard_fixtures",
    "student_t_noise",
    "validate_detector",
]
