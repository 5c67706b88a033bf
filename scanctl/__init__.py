"""scanctl: push thousands of symbols through a rate-limited HTTP analysis API, losing none."""

__version__ = "0.1.0"
