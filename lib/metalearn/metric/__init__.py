"""Metric-based meta-learning: Siamese, Relation, Matching and Prototypical Networks, Meta-GNN. Shared module:
``episodic`` (episodic training and scoring)."""
