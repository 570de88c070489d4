"""Metric search: proposers (llm, evolve, enumerate), fitness, hall of fame, reports."""
