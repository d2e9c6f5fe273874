"""What users and pages see: the REST and follow websocket handlers and the status."""
