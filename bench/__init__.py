"""`make bench`: throughput of esml's per-event path, measured on this machine."""
