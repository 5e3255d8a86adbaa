"""Tests of actors/email_server/: rendering, throttle, delivery promises."""
