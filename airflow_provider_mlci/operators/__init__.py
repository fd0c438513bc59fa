"""Operators: thin tasks that store their arguments and call a hook or ``core``."""
