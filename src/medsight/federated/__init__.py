"""Federated training across sites on Flower's deployment engine (SuperLink + one SuperNode per site)."""
