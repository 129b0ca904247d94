-- Times are INTEGER unix milliseconds (UTC); NULL where a time is not yet known.
CREATE TABLE envs (
	workflow_id    TEXT    NOT NULL,
	node_id        TEXT    NOT NULL,
	version_id     TEXT    NOT NULL,
	state          TEXT    NOT NULL,
	python_version TEXT    NOT NULL DEFAULT '',
	python_path    TEXT    NOT NULL DEFAULT '',
	env_path       TEXT    NOT NULL DEFAULT '',
	revision       INTEGER NOT NULL DEFAULT 0,
	last_error     TEXT    NOT NULL DEFAULT '',
	created_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL,
	last_used_at   INTEGER NOT NULL,
	PRIMARY KEY (workflow_id, node_id, version_id)
);
CREATE INDEX envs_last_used_at ON envs (last_used_at);

CREATE TABLE env_revisions (
	workflow_id    TEXT    NOT NULL,
	node_id        TEXT    NOT NULL,
	version_id     TEXT    NOT NULL,
	revision       INTEGER NOT NULL,
	pyproject_toml TEXT    NOT NULL,
	uv_lock        TEXT    NOT NULL,
	operation_id   INTEGER NOT NULL,
	created_at     INTEGER NOT NULL,
	PRIMARY KEY (workflow_id, node_id, version_id, revision),
	FOREIGN KEY (workflow_id, node_id, version_id) REFERENCES envs ON DELETE CASCADE
);

CREATE TABLE env_leases (
	id           TEXT    PRIMARY KEY,
	workflow_id  TEXT    NOT NULL,
	node_id      TEXT    NOT NULL,
	version_id   TEXT    NOT NULL,
	exclusive    INTEGER NOT NULL,
	holder       TEXT    NOT NULL,
	operation    TEXT    NOT NULL,
	operation_id INTEGER NOT NULL,
	acquired_at  INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL
);
CREATE INDEX env_leases_key ON env_leases (workflow_id, node_id, version_id, expires_at);

-- The audit trail outlives the environments it names: no foreign key to envs.
CREATE TABLE env_operations (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	workflow_id   TEXT    NOT NULL,
	node_id       TEXT    NOT NULL,
	version_id    TEXT    NOT NULL,
	operation     TEXT    NOT NULL,
	status        TEXT    NOT NULL,
	error_code    TEXT    NOT NULL DEFAULT '',
	error_message TEXT    NOT NULL DEFAULT '',
	actor         TEXT    NOT NULL DEFAULT '',
	request_id    TEXT    NOT NULL DEFAULT '',
	agent         TEXT    NOT NULL DEFAULT '',
	params        TEXT    NOT NULL DEFAULT '{}',
	result        TEXT,
	started_at    INTEGER NOT NULL,
	finished_at   INTEGER,
	duration_ms   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX env_operations_key ON env_operations (workflow_id, node_id, version_id, id);
