"""Recording: attach planning, cflags, resolution, the bcc and tracefs back ends."""
