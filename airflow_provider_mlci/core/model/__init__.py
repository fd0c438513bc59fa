"""Models.

Checks on a candidate (:mod:`.checks`, loaded in :mod:`.child`), the release gate against the
deployed model (:mod:`.gate`), the GTO registry (:mod:`.registry`), nightly refinement
(:mod:`.refine`).
"""
