"""Tests of jobs.schedules, one file per module."""
