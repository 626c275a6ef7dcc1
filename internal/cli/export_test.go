package cli

// StartSummary exposes startSummary to the tests.
var StartSummary = startSummary
