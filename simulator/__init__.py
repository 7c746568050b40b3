"""The world around the learner: buses, the paced replay producer, runs, the CLI."""
