"""Contracts: what Asgard promises about its data and its model, declared once in code."""
