"""Local development tooling: dev host and emulators. Never deployed."""
