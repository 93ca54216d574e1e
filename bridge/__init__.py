"""Bridges: compute clients that claim jobs from a hub and run them natively."""
