-- Warm runs (issue 12): an environment's preload list, the modules its warm interpreter imports
-- before any run, on top of what the agent preloads by itself. A JSON array of module names; ''
-- is none (the default, one byte per environment).
ALTER TABLE envs ADD COLUMN preload TEXT NOT NULL DEFAULT '';
