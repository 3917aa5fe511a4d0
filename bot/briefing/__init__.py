"""The daily runs: the preflight and the 9am briefing, their schedule, and the admin summary of each run."""
