"""Tests of bitswarm.train."""
