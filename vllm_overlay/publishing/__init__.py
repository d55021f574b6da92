"""Distribution: the PEP 503 index, upload to an internal index, the Docker image."""
