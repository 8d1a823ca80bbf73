"""Model architectures: pure tensor math, built from config dataclasses."""
