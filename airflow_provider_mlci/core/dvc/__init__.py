"""DVC on a checkout.

Pipelines and their lock (:mod:`.pipeline`), each DVC operation in a subprocess of its own
(:mod:`.ops`, run by :mod:`.child`), metrics files (:mod:`.metrics`).
"""
