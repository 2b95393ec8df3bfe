"""Training: methods and their registry, trainer, run folders, configs, checkpoints, time-budget
plans, losses, densification strategies, distributed training and evaluation."""
