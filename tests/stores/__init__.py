"""Tests of actors/stores/: the Store contract on every implementation, batching."""
