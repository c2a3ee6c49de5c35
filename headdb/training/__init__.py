"""The trl callback that ingests each checkpoint a trainer saves."""
