"""The three tasks (multi_label, single_label, regression): label encoding, losses, metrics and their bootstrap."""
