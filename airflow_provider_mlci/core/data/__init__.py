"""Data checks.

Schema validation (:mod:`.validation`) over tabular files (:mod:`.tabular`), drift against a
reference (:mod:`.drift`), and noticing new data (:mod:`.watch`).
"""
