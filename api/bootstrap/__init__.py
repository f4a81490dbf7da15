"""The composition root: settings, the container that builds every adapter once, the
runtime (configured or embedded servers), the database plumbing and the realtime wiring."""
