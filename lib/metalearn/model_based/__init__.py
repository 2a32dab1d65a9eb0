"""Model-based meta-learning: MANN, Meta Networks, HyperNetworks."""
