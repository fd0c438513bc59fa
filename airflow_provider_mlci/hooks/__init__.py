"""Hooks: one external system each."""
