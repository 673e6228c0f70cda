"""Honest metrics of a run: ``evaluate`` (bootstrap intervals, tuned thresholds), the plots and the HTML report."""
