"""Training: token shards (`slm data prepare`), recipes, and one loop for pretraining, distillation and
fine-tuning, in one process or many through torchrun."""
