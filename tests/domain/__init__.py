"""Tests of actors/domain/: validation, templates, MIME, event checks."""
