"""Files on disk: the folder layouts (layout), atomic writes and staging folders (atomic), the one-writer lock (lock)."""
