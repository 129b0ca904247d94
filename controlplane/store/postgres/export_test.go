package postgres

// Migrations are the embedded migrations, for the schema tests.
var Migrations = migrations
