"""Read models built from the notification logs, their runner and operations."""
