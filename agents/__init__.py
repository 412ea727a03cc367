"""The Faust app and its agents: thin shells around the pipeline core."""
