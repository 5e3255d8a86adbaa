"""Tests of runtime/: actors, supervision, the asyncio edge."""
