"""Shared helpers of the tests (servers, services, security fixtures); no tests here."""
