"""Tests of daemon/dialects: each dialect on its own, fed bytes split anywhere."""
