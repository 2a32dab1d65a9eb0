"""The bottom floor: what every method stands on. Imports nothing above it."""
