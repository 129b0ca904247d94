-- Immutable builds (docs/builds.md). Each distinct pyproject.toml and uv.lock is stored once in
-- contents, named by the SHA-256 (hex) of its bytes (sha256_hex: a function the SQLite store
-- registers, the same digest store.Digest computes); revisions reference the digests. A hundred
-- environments with the same requirements then cost one copy of each file, not a hundred.
CREATE TABLE contents (
	digest TEXT PRIMARY KEY,
	body   TEXT NOT NULL
);
INSERT INTO contents (digest, body)
	SELECT sha256_hex(pyproject_toml), pyproject_toml FROM env_revisions
	UNION SELECT sha256_hex(uv_lock), uv_lock FROM env_revisions;

-- SQLite cannot add a NOT NULL column with a foreign key: the table is rebuilt.
CREATE TABLE env_revisions_new (
	workflow_id      TEXT    NOT NULL,
	node_id          TEXT    NOT NULL,
	version_id       TEXT    NOT NULL,
	revision         INTEGER NOT NULL,
	pyproject_digest TEXT    NOT NULL REFERENCES contents (digest),
	lock_digest      TEXT    NOT NULL REFERENCES contents (digest),
	build_id         TEXT    NOT NULL DEFAULT '',
	operation_id     INTEGER NOT NULL,
	created_at       INTEGER NOT NULL,
	PRIMARY KEY (workflow_id, node_id, version_id, revision),
	FOREIGN KEY (workflow_id, node_id, version_id) REFERENCES envs ON DELETE CASCADE
);
INSERT INTO env_revisions_new (workflow_id, node_id, version_id, revision, pyproject_digest, lock_digest,
	operation_id, created_at)
	SELECT workflow_id, node_id, version_id, revision, sha256_hex(pyproject_toml), sha256_hex(uv_lock),
		operation_id, created_at FROM env_revisions;
DROP TABLE env_revisions;
ALTER TABLE env_revisions_new RENAME TO env_revisions;
CREATE INDEX env_revisions_operation ON env_revisions (operation_id);
-- Deleting an environment removes the contents no revision references any more: these answer
-- "does another revision reference it" (and serve the foreign keys) without a scan.
CREATE INDEX env_revisions_pyproject ON env_revisions (pyproject_digest);
CREATE INDEX env_revisions_lock ON env_revisions (lock_digest);

CREATE TABLE builds (
	id                  TEXT    PRIMARY KEY,
	python_path         TEXT    NOT NULL DEFAULT '',
	python_full_version TEXT    NOT NULL DEFAULT '',
	lock_digest         TEXT    NOT NULL DEFAULT '',
	state               TEXT    NOT NULL,
	packages_installed  INTEGER NOT NULL DEFAULT 0,
	bytes               INTEGER NOT NULL DEFAULT 0,
	created_at          INTEGER NOT NULL,
	last_used_at        INTEGER NOT NULL
);
-- Hibernation and cleanup list builds by state, least recently used first.
CREATE INDEX builds_state_used ON builds (state, last_used_at);

-- The current revision's build, kept beside revision so that "the environments of this build"
-- (hibernation, waking, cleanup's unreferenced builds) is one indexed lookup. Existing
-- environments were installed in place: their directory is at their revision.
ALTER TABLE envs ADD COLUMN build_id TEXT NOT NULL DEFAULT '';
ALTER TABLE envs ADD COLUMN disk_revision INTEGER NOT NULL DEFAULT 0;
UPDATE envs SET disk_revision = revision;
CREATE INDEX envs_build ON envs (build_id);
-- The maintenance pass looks for directories behind their revision: few rows, a partial index.
CREATE INDEX envs_behind_disk ON envs (updated_at) WHERE disk_revision < revision;

-- Lease modes (store.LeaseMode) replace the exclusive flag: an exclusive lease was a change's,
-- a shared one a run's.
ALTER TABLE env_leases ADD COLUMN mode TEXT NOT NULL DEFAULT 'run';
UPDATE env_leases SET mode = CASE WHEN exclusive THEN 'change' ELSE 'run' END;
ALTER TABLE env_leases DROP COLUMN exclusive;
