-- Scale (issue 15): a cleanup pass reads every idle environment in bounded batches, in
-- (last_used_at, key) order after a cursor, so the order needs one index that ends in the key
-- (the single-column envs_last_used_at cannot serve the keyset's row comparison); and the
-- cursor itself is persisted, so the next leader resumes a pass the last one did not finish.
CREATE INDEX envs_idle ON envs (last_used_at, workflow_id, node_id, version_id);
DROP INDEX envs_last_used_at;

-- The fleet-wide views of one kind of operation (the operator console's recent cleanups) page
-- on (operation, id) instead of reading every operation.
CREATE INDEX env_operations_kind ON env_operations (operation, id);

-- Builds are paged on (last_used_at, id) the same way.
CREATE INDEX builds_used ON builds (last_used_at, id);

CREATE TABLE cleanup_cursors (
	name         text        PRIMARY KEY, -- 'envs' or 'builds'
	last_used_at timestamptz NOT NULL,
	workflow_id  text COLLATE "C" NOT NULL DEFAULT '',
	node_id      text COLLATE "C" NOT NULL DEFAULT '',
	version_id   text COLLATE "C" NOT NULL DEFAULT '',
	build_id     text COLLATE "C" NOT NULL DEFAULT '',
	updated_at   timestamptz NOT NULL
);

-- How many environments' current revision is installed as each build, kept by the commits and
-- deletes (as lock_refs is for locks): a status shows what its build is shared with, and
-- counting a popular build's environments at every status read a hundred thousand index entries.
CREATE TABLE build_refs (
	build_id text PRIMARY KEY,
	envs     integer NOT NULL
);
INSERT INTO build_refs (build_id, envs)
	SELECT build_id, count(*) FROM envs WHERE build_id <> '' GROUP BY build_id;
