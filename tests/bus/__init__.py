"""Tests of actors/bus/ against a real RabbitMQ."""
