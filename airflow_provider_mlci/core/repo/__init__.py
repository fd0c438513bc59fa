"""A repository at a revision.

Git (:mod:`.git`), the worker's mirror and private checkouts (:mod:`.workspace`), how it is
reached (:mod:`.access`), safe commits to a branch (:mod:`.commit`), paths inside a checkout
(:mod:`.paths`).
"""
