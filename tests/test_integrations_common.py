"""What both callbacks share (``ndt_fast.integrations._common``): calling ``FastTracker.log`` only
at the steps ``log_needed`` names records exactly what logging every step records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ndt_fast import FastTracker
from ndt_fast.integrations._common import TrackingCallback

pytestmark = pytest.mark.usefixtures("torch_env")


@pytest.mark.parametrize(("frequency", "window"), [(1, 1), (5, 1), (5, 2), (7, 7), (10, 3)])
def test_logging_only_the_needed_steps_records_what_logging_every_step_does(frequency, window):
    gate = TrackingCallback("test", None, frequency, None, True, (), None, None, {"window": window})
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(16, 8, generator=g) for _ in range(40)]
    results = []
    for gated in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 6))
        tracker = FastTracker(model, sampling_frequency=frequency, window=window, keep_last_output=False)
        logged = []
        for step, x in enumerate(inputs, start=1):  # the callbacks' labels: step 1 is the first optimizer step
            model(x)
            if not gated or gate.log_needed(step):
                tracker.log(step, float(step))
                logged.append(step)
        results.append(tracker.get_results())
        tracker.close()
        if gated and frequency > window + 1:  # (otherwise every step is needed)
            assert len(logged) < len(inputs)
    full, gated_results = results
    for layer, frame in full.items():
        assert frame["step"].tolist() == list(range(frequency, len(inputs) + 1, frequency))
        np.testing.assert_array_equal(gated_results[layer].to_numpy(), frame.to_numpy())
