"""The trace file format: records, events, the function table."""
