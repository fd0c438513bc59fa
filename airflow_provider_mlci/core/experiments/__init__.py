"""Sweeps.

The search space and ranking (:mod:`.sweep`), each trial as a DVC experiment (:mod:`.trials`,
run by :mod:`.child`), and trials that ran on an instance (:mod:`.remote`).
"""
