"""Reports.

The HTML (and Markdown) report of metrics, params and plots (:mod:`.html`).
"""
