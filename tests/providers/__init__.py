"""Tests of actors/providers/: SMTP, SES, Maildir, the chain and its breaker."""
