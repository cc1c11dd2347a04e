"""Results where people keep them: experiment trackers (MLflow, W&B) and the hub model card's model-index."""
