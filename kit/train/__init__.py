"""Training: timm models, the one-fold loop, the k-fold driver."""
