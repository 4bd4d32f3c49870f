"""Training and evaluating one candidate (knows nothing about populations)."""
