-- Immutable builds (docs/builds.md). Each distinct pyproject.toml and uv.lock is stored once in
-- contents, named by the SHA-256 (hex) of its bytes (the digest store.Digest computes); revisions
-- reference the digests. A hundred environments with the same requirements then cost one copy of
-- each file, not a hundred.
CREATE TABLE contents (
	digest text PRIMARY KEY,
	body   text NOT NULL
);
INSERT INTO contents (digest, body)
	SELECT encode(sha256(convert_to(pyproject_toml, 'UTF8')), 'hex'), pyproject_toml FROM env_revisions
	UNION SELECT encode(sha256(convert_to(uv_lock, 'UTF8')), 'hex'), uv_lock FROM env_revisions;

ALTER TABLE env_revisions
	ADD COLUMN pyproject_digest text,
	ADD COLUMN lock_digest text,
	ADD COLUMN build_id text NOT NULL DEFAULT '';
UPDATE env_revisions SET pyproject_digest = encode(sha256(convert_to(pyproject_toml, 'UTF8')), 'hex'),
	lock_digest = encode(sha256(convert_to(uv_lock, 'UTF8')), 'hex');
ALTER TABLE env_revisions
	ALTER COLUMN pyproject_digest SET NOT NULL,
	ALTER COLUMN lock_digest SET NOT NULL,
	ADD FOREIGN KEY (pyproject_digest) REFERENCES contents (digest),
	ADD FOREIGN KEY (lock_digest) REFERENCES contents (digest),
	DROP COLUMN pyproject_toml,
	DROP COLUMN uv_lock;
-- Deleting an environment removes the contents no revision references any more: these answer
-- "does another revision reference it" (and serve the foreign keys) without a scan.
CREATE INDEX env_revisions_pyproject ON env_revisions (pyproject_digest);
CREATE INDEX env_revisions_lock ON env_revisions (lock_digest);

CREATE TABLE builds (
	id                  text        PRIMARY KEY,
	python_path         text        NOT NULL DEFAULT '',
	python_full_version text        NOT NULL DEFAULT '',
	lock_digest         text        NOT NULL DEFAULT '',
	state               text        NOT NULL,
	packages_installed  integer     NOT NULL DEFAULT 0,
	bytes               bigint      NOT NULL DEFAULT 0,
	created_at          timestamptz NOT NULL,
	last_used_at        timestamptz NOT NULL
);
-- Hibernation and cleanup list builds by state, least recently used first.
CREATE INDEX builds_state_used ON builds (state, last_used_at);

-- The current revision's build, kept beside revision so that "the environments of this build"
-- (hibernation, waking, cleanup's unreferenced builds) is one indexed lookup. Existing
-- environments were installed in place: their directory is at their revision.
ALTER TABLE envs
	ADD COLUMN build_id text NOT NULL DEFAULT '',
	ADD COLUMN disk_revision bigint NOT NULL DEFAULT 0;
UPDATE envs SET disk_revision = revision;
CREATE INDEX envs_build ON envs (build_id);
-- The maintenance pass looks for directories behind their revision: few rows, a partial index.
CREATE INDEX envs_behind_disk ON envs (updated_at) WHERE disk_revision < revision;

-- Lease modes (store.LeaseMode) replace the exclusive flag: an exclusive lease was a change's,
-- a shared one a run's.
ALTER TABLE env_leases ADD COLUMN mode text NOT NULL DEFAULT 'run';
UPDATE env_leases SET mode = CASE WHEN exclusive THEN 'change' ELSE 'run' END;
ALTER TABLE env_leases DROP COLUMN exclusive;
