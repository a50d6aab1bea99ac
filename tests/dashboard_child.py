"""A training run for the dashboard tests, run as a subprocess until it finishes or is killed.

    python dashboard_child.py OUTPUT STEPS [STEP_SLEEP_S]

An MLP whose middle stage (``Switch``) alternates between full rank and rank 3 every 150 steps,
so both jump rules fire within the first few hundred steps; FastTracker samples every step with
the gradient norm and the weights' stable rank (``track_weights``), flushing every 0.1 s. Prints
``ready`` once the tracker exists and ``closed`` after ``close()``; nothing per step (the parent
need not drain a pipe).
"""

import sys
import time

import torch
from torch import nn

from dashboard_runs import train
from models import Switch
from ndt_fast import FastTracker

path, steps = sys.argv[1], int(sys.argv[2])
step_sleep = float(sys.argv[3]) if len(sys.argv) > 3 else 0.004
torch.set_num_threads(1)
torch.manual_seed(0)
switch = Switch(32)
model = nn.Sequential(nn.Linear(24, 32), switch, nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
tracker = FastTracker(model, layers=[model[0], model[1], model[2]], layer_names=["fc1", "switch", "fc2"],
                      sampling_frequency=1, output=path, flush_interval=0.1, track_weights=("stable_rank",))
print("ready", flush=True)


def before_step(step: int) -> None:
    switch.rank = 32 if (step // 150) % 2 == 0 else 3
    time.sleep(step_sleep)


train(model, tracker, steps, 24, before_step)
tracker.close()
print("closed", flush=True)
