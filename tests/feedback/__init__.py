"""Tests of actors/feedback/: SES events over SNS, the sink's actions, the ledger."""
