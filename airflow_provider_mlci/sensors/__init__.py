"""Sensors: wait for something to happen (new data), deferring to the triggerer meanwhile."""
