"""Knowledge distillation: the losses, and the trainer of teacher, student and scratch baseline."""
