"""skbpath's tracer: live tracing, the trace file, the model and the CLI."""

__version__ = "0.1.0"
