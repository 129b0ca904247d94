-- The package index of the fleet (issue 14), keyed by distinct lock content: the packages of
-- each distinct uv.lock once (a few hundred locks serve a hundred thousand environments), and
-- the current revision's lock digest beside each environment, so "which environments hold X" is
-- one join of two indexes. Rows are written in the transaction that commits a revision with a
-- lock not indexed yet; locks committed before this migration are indexed at start-up (the
-- store's backfill), which locks_indexed tells apart from a lock without packages.
CREATE TABLE lock_packages (
	lock_digest TEXT    NOT NULL,
	name        TEXT    NOT NULL, -- PEP 503 normalised
	version     TEXT    NOT NULL,
	direct      INTEGER NOT NULL, -- declared by the project (its dependencies in the lock)
	PRIMARY KEY (lock_digest, name, version)
) WITHOUT ROWID;
-- The package query: the versions of a name, then the locks holding chosen versions.
CREATE INDEX lock_packages_name ON lock_packages (name, version, lock_digest, direct);

CREATE TABLE locks_indexed (
	lock_digest TEXT    PRIMARY KEY,
	packages    INTEGER NOT NULL
) WITHOUT ROWID;

ALTER TABLE envs ADD COLUMN lock_digest TEXT NOT NULL DEFAULT '';
UPDATE envs SET lock_digest = COALESCE((SELECT r.lock_digest FROM env_revisions r
	WHERE r.workflow_id = envs.workflow_id AND r.node_id = envs.node_id AND r.version_id = envs.version_id
		AND r.revision = envs.revision), '');
CREATE INDEX envs_lock ON envs (lock_digest, workflow_id, node_id, version_id);

-- How many environments' current revision has each lock, and a generation that every change of
-- that number (a commit moving an environment onto or off the lock, a delete) increments: the
-- vulnerabilities view reads a few hundred rows here instead of counting a hundred thousand
-- environments, and knows which locks' environments it must read again.
CREATE TABLE lock_refs (
	lock_digest TEXT    PRIMARY KEY,
	envs        INTEGER NOT NULL,
	generation  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO lock_refs (lock_digest, envs, generation)
	SELECT lock_digest, count(*), 1 FROM envs WHERE lock_digest <> '' GROUP BY lock_digest;
