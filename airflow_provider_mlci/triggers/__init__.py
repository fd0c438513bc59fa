"""Triggers: the waiting half of deferrable sensors and operators (run in the triggerer)."""
