"""Tests of the hot path through a real daemon and simulator: relay.py and upstream.py."""
