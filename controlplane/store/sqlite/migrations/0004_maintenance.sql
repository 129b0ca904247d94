-- The maintenance pass every control plane runs each LEASE_TTL looks for audit rows still
-- running, environments left mid-change, and whether an abandoned operation's revision was
-- committed. Without these indexes each pass would scan the whole audit table, the environments
-- and their revisions, which only ever grow.
CREATE INDEX env_operations_status ON env_operations (status, started_at);
CREATE INDEX envs_state ON envs (state, updated_at);
CREATE INDEX env_revisions_operation ON env_revisions (operation_id);
