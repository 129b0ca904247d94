package app

// SweepTrash exposes sweepTrash to the external tests.
var SweepTrash = sweepTrash
