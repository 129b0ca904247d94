-- Fleet-wide facts: the identity of the shared storage the fleet's agents must mount, and named
-- roles (the cleanup leader) held by one control plane at a time until expires_at.
CREATE TABLE fleet_settings (
	name       text        PRIMARY KEY,
	value      text        NOT NULL,
	created_at timestamptz NOT NULL
);

CREATE TABLE leaders (
	name       text        PRIMARY KEY,
	holder     text        NOT NULL,
	expires_at timestamptz NOT NULL
);
