"""The running process: progress bars, the installed version."""
