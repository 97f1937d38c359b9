"""Tests of jobs.services, one file per module."""
