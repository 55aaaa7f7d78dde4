"""Use cases between the callers (web, retraining loop, stations' bootstrap, benchmarks) and
the database: each module owns one set of domain rules, and callers call services, never each
other. See ``docs/architecture.md`` for what may import what."""
