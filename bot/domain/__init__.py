"""The pure core: states and rules, forms, durations, notices. No I/O, no clock reads."""
