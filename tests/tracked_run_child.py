"""A tracked training run for the crash and live-reader tests (run as a subprocess).

    python tracked_run_child.py OUTPUT FLUSH_INTERVAL STEPS

Trains a small MLP with ``FastTracker(output=OUTPUT, sampling_frequency=1)`` and prints, after
each ``log()``, a line ``logged <step> <time.monotonic()>`` (flushed), so the parent knows which
records were logged when. CLOCK_MONOTONIC is system-wide on Linux: the parent's clock agrees.
"""

import sys
import time

import torch
from torch import nn

from ndt_fast import FastTracker

path, flush_interval, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
tracker = FastTracker(model, layers=[model[0], model[2], model[4]], sampling_frequency=1, output=path,
                      flush_interval=flush_interval)
print("ready", flush=True)
for step in range(steps):
    x = torch.randn(16, 32)
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    tracker.log(step, loss)
    print("logged", step, time.monotonic(), flush=True)
    time.sleep(0.002)  # a few hundred steps per second: many flush intervals per run
tracker.close()
print("closed", flush=True)
