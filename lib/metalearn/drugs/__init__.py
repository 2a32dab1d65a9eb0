"""Meta-learning for drug discovery: few-shot molecular property prediction (``property_prediction``, the
chapter's entry point) and the multitask baseline (``multitask``)."""
