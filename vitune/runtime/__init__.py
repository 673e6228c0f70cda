"""The running process: progress bars, stop requests from Ctrl-C and kill (signals), the installed version."""
