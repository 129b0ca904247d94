-- One row per named probe: /readyz proves the database takes a write by upserting it.
CREATE TABLE readiness_probes (
	name      TEXT    PRIMARY KEY,
	holder    TEXT    NOT NULL,
	probed_at INTEGER NOT NULL
);
