package cli

// StartSummary exposes startSummary to the tests.
var StartSummary = startSummary

// ParseMiB exposes parseMiB to the tests.
var ParseMiB = parseMiB
