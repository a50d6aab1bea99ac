"""ndt 2.0.0's public names that FastTracker itself does not need, for drop-in use.

Everything here is also importable from ``ndt_fast`` directly (lazily: ``import ndt_fast`` does
not import torch, PyYAML or these modules). ``ndt_fast.compat.validity`` holds ndt's validity
harness with all its fixtures (``from ndt.validity import …`` → ``from ndt_fast.compat.validity
import …``). The README's compatibility table maps every ndt name to its ndt_fast counterpart.
"""
