"""Newer upstream releases: releases, probes, the status matrix, bisect."""
