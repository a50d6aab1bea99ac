"""``ndt-fast reproduce tds``: the TDS article's experiment, its figures and a table of its claims.

    ndt-fast reproduce tds [--steps 8000] [--freq 5] [--seeds 1] [--device cpu] [--data DIR] [--out DIR]
    python -m ndt_fast.experiments.tds …            # the same command

The article ("I Measured Neural Network Training Every 5 Steps for 10,000 Iterations", Towards
Data Science, Nov. 2025; ndtracker ships a reproduction script, ``examples/03_reproduce_tds_experiment.py``)
trains an MLP 784-256-128-10 with ReLU on MNIST (normalized with mean 0.1307, std 0.3081) with
Adam (lr 1e-3, betas 0.9/0.999), batches of 64 shuffled, cross-entropy, for 8000 steps, and
measures the three Linear layers' outputs every 5 steps (1600 samples each). This module does the
same with :class:`ndt_fast.FastTracker` (``track_weights=WEIGHT_METRICS``: the weight matrices' stable
rank and eigenvalue participation ratio too; the gradient norm is logged), streams the samples to ``run.h5`` while training, then writes:

============================  =================================================================
``run.h5``                    the run file (``ndt_fast.load``), written while training
``results.csv``               every sample of every layer (``layer`` column first)
``jumps.csv``                 every jump found by ndt's rule, per space and sampling interval
``fig2_activation_stable_rank.png``  Fig. 2: activation stable rank per layer over steps
``fig3_dimensionality_vs_loss.png``  Fig. 3: dimensionality and loss on two axes, with ρ
``fig4_jumps_sampling.png``   Fig. 4: jumps found sampling every 5 vs every 50 steps
``fig5_activation_vs_weight.png``    Fig. 5: activation space vs weight space
``claims.md``                 each claim of the article beside what this run measured, with a
                              verdict: reproduced / not reproduced / not measurable as stated
``claims.json``               the same numbers, machine-readable, with the run's configuration
============================  =================================================================

With ``--seeds N`` (N > 1) seeds 0..N-1 each get these files in ``OUT/seed<k>/`` and
``OUT/claims.md`` / ``OUT/claims.json`` aggregate them (mean ± sd over seeds).

How the article's claims are measured — the readings, rules and tolerances are in
:data:`CLAIMS` and are printed into ``claims.md``. "Dimensionality" is read as the activation
stable rank of the middle layer (Layer2_256-128, the layer ndtracker's reproduction script uses
for Fig. 3), and the weight-space claim is read on that layer's weight matrix; jumps are ndt's
offline rule (``FastTracker.detect_jumps``: |z| > 3 against the 50 previous samples); the
every-50 series of Fig. 4 is the every-5 series subsampled at ``step % 50 == 0``, through the same
detector.

Speed: MNIST is one normalized ``(60000, 784)`` float32 tensor indexed by shuffled batches (no
DataLoader, no per-sample transform); the gradient norm is computed only on sampled steps; Adam
uses torch's fused kernel where available (the same update rule). The tracker is closed — the run
file finished — whatever ends the training loop, Ctrl-C included (exit status 130).

The package, by concern: :mod:`.article` (the set-up: constants, MLP, batches, optimizer, data),
:mod:`.training` (one seed's tracked training loop, jumps), :mod:`.statistics`, :mod:`.claims`
(the claims, their rules and verdicts), :mod:`.figures` (Figs. 2–5), :mod:`.report` (jumps.csv,
claims.md/json, the summary) and :mod:`.cli` (options, checks, the run). Every name other code
uses is importable from ``ndt_fast.experiments.tds``.
"""

from ndt_fast.experiments.tds.article import (
    ARTICLE_EVERY, ARTICLE_STEPS, BATCH_SIZE, BETAS, CLAIMS_JSON, CLAIMS_MD, DIM_LAYER, FIGURES, FLUSH_SECONDS,
    JUMPS_CSV, LAYER_NAMES, LAYER_WIDTHS, LEARNING_RATE, LOW_EVERY, NDT_METRICS, RESULTS_CSV, RUN_FILE, SEED_FILES,
    SMOOTH_SAMPLES, SPACES, TDSMLP, WEIGHT_LAYER, WEIGHT_METRICS, ShuffledBatches, _adam, _grad_norm,
    load_training_data)
from ndt_fast.experiments.tds.claims import (
    APPENDIX_METRICS, CLAIMS, VERDICTS, Claim, ClaimRow, evaluate_claims, readings)
from ndt_fast.experiments.tds.cli import (
    EPILOG, SUMMARY, _load_data, add_arguments, build_parser, main, run, validate)
from ndt_fast.experiments.tds.figures import write_figures
from ndt_fast.experiments.tds.report import render_claims, summary, write_claims, write_jumps_csv
from ndt_fast.experiments.tds.statistics import (
    Measurement, Stat, level, pearson, rolling_median, spearman, three_segment_fit)
from ndt_fast.experiments.tds.training import (
    Progress, RunData, SeedRun, detect_on, find_jumps, sampling_intervals, train_seed)

__all__ = [
    "APPENDIX_METRICS", "ARTICLE_EVERY", "ARTICLE_STEPS", "BATCH_SIZE", "BETAS", "CLAIMS", "CLAIMS_JSON", "CLAIMS_MD",
    "DIM_LAYER", "EPILOG", "FIGURES", "FLUSH_SECONDS", "JUMPS_CSV", "LAYER_NAMES", "LAYER_WIDTHS", "LEARNING_RATE",
    "LOW_EVERY", "NDT_METRICS", "RESULTS_CSV", "RUN_FILE", "SEED_FILES", "SMOOTH_SAMPLES", "SPACES", "SUMMARY",
    "TDSMLP", "VERDICTS", "WEIGHT_LAYER", "WEIGHT_METRICS", "Claim", "ClaimRow", "Measurement", "Progress", "RunData",
    "SeedRun", "ShuffledBatches", "Stat", "add_arguments", "build_parser", "detect_on", "evaluate_claims",
    "find_jumps", "level", "load_training_data", "main", "pearson", "readings", "render_claims", "rolling_median",
    "run", "sampling_intervals", "spearman", "summary", "three_segment_fit", "train_seed", "validate",
    "write_claims", "write_figures", "write_jumps_csv",
]
