"""Instruments, sessions and the event dtype every data source produces."""
