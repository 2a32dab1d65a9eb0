"""Background: pre-training & fine-tuning, the baseline every meta-learner has to beat."""
