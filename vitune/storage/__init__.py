"""Files on disk: the run-folder layout, atomic writes and the one-writer lock."""
