-- Ids collate as "C" so that (workflow_id, node_id, version_id) order and keyset paging are
-- byte order whatever the database's locale, as in the SQLite store.
CREATE TABLE envs (
	workflow_id    text COLLATE "C" NOT NULL,
	node_id        text COLLATE "C" NOT NULL,
	version_id     text COLLATE "C" NOT NULL,
	state          text        NOT NULL,
	python_version text        NOT NULL DEFAULT '',
	python_path    text        NOT NULL DEFAULT '',
	env_path       text        NOT NULL DEFAULT '',
	revision       bigint      NOT NULL DEFAULT 0,
	last_error     text        NOT NULL DEFAULT '',
	created_at     timestamptz NOT NULL,
	updated_at     timestamptz NOT NULL,
	last_used_at   timestamptz NOT NULL,
	PRIMARY KEY (workflow_id, node_id, version_id)
);
CREATE INDEX envs_last_used_at ON envs (last_used_at);

CREATE TABLE env_revisions (
	workflow_id    text COLLATE "C" NOT NULL,
	node_id        text COLLATE "C" NOT NULL,
	version_id     text COLLATE "C" NOT NULL,
	revision       bigint      NOT NULL,
	pyproject_toml text        NOT NULL,
	uv_lock        text        NOT NULL,
	operation_id   bigint      NOT NULL,
	created_at     timestamptz NOT NULL,
	PRIMARY KEY (workflow_id, node_id, version_id, revision),
	FOREIGN KEY (workflow_id, node_id, version_id) REFERENCES envs ON DELETE CASCADE
);

CREATE TABLE env_leases (
	id           text PRIMARY KEY,
	workflow_id  text COLLATE "C" NOT NULL,
	node_id      text COLLATE "C" NOT NULL,
	version_id   text COLLATE "C" NOT NULL,
	exclusive    boolean     NOT NULL,
	holder       text        NOT NULL,
	operation    text        NOT NULL,
	operation_id bigint      NOT NULL,
	acquired_at  timestamptz NOT NULL,
	expires_at   timestamptz NOT NULL
);
CREATE INDEX env_leases_key ON env_leases (workflow_id, node_id, version_id, expires_at);

-- The audit trail outlives the environments it names: no foreign key to envs.
CREATE TABLE env_operations (
	id            bigserial PRIMARY KEY,
	workflow_id   text COLLATE "C" NOT NULL,
	node_id       text COLLATE "C" NOT NULL,
	version_id    text COLLATE "C" NOT NULL,
	operation     text        NOT NULL,
	status        text        NOT NULL,
	error_code    text        NOT NULL DEFAULT '',
	error_message text        NOT NULL DEFAULT '',
	actor         text        NOT NULL DEFAULT '',
	request_id    text        NOT NULL DEFAULT '',
	agent         text        NOT NULL DEFAULT '',
	params        jsonb       NOT NULL DEFAULT '{}',
	result        jsonb,
	started_at    timestamptz NOT NULL,
	finished_at   timestamptz,
	duration_ms   bigint      NOT NULL DEFAULT 0
);
CREATE INDEX env_operations_key ON env_operations (workflow_id, node_id, version_id, id);
