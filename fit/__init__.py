"""Fit stage: SAEs trained from an activation store (built in the next step of the project)."""
