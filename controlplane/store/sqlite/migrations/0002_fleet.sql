-- Fleet-wide facts: the identity of the shared storage the fleet's agents must mount, and named
-- roles (the cleanup leader) held by one control plane at a time until expires_at.
CREATE TABLE fleet_settings (
	name       TEXT    PRIMARY KEY,
	value      TEXT    NOT NULL,
	created_at INTEGER NOT NULL
);

CREATE TABLE leaders (
	name       TEXT    PRIMARY KEY,
	holder     TEXT    NOT NULL,
	expires_at INTEGER NOT NULL
);
