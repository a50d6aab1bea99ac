"""Monitoring alerts: the TDS article's three warning signs, computed online from a tracker's records.

- ``rules``: :class:`BottleneckRule` ("layers stop expanding"), :class:`InstabilityRule`
  ("expansion becomes erratic"), :class:`InformationFlowRule` ("early layers saturate while late
  layers fail to expand"); each documents its definition and thresholds.
- ``alert``: :class:`Alert` and its table forms; ``engine``: :class:`AlertMonitor`, the online runner.
- ``fixtures`` / ``validation``: planted and null trajectories, recall and false alarms per 1000
  samples (``python -m ndt_fast.monitor.validation``).

Use: ``FastTracker(model, alerts=True, on_alert=print)`` (or ``alerts=[BottleneckRule(window=100)]``).
"""

from ndt_fast.monitor.alert import Alert, alerts_frame
from ndt_fast.monitor.engine import AlertMonitor
from ndt_fast.monitor.history import LayerInfo
from ndt_fast.monitor.rules import AlertRule, BottleneckRule, InformationFlowRule, InstabilityRule, default_rules

__all__ = ["Alert", "AlertMonitor", "AlertRule", "BottleneckRule", "InformationFlowRule", "InstabilityRule",
           "LayerInfo", "alerts_frame", "default_rules"]
