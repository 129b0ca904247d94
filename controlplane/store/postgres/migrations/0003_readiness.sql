-- One row per named probe: /readyz proves the database takes a write by upserting it.
CREATE TABLE readiness_probes (
	name      text        PRIMARY KEY,
	holder    text        NOT NULL,
	probed_at timestamptz NOT NULL
);
